"""Each classic metric against a value computed by hand on a tiny random model: one
unbatched forward pass per sequence, log-softmax and argmax read off by index."""

from __future__ import annotations

import math

import pytest
import torch

from editprobe.data import EditRecord
from editprobe.data.records import PromptAnswer
from editprobe.models.tiny import tiny_facts
from editprobe.models.tokens import continuation_ids, encode
from editprobe.probes import PROBES, ProbeContext
from editprobe.probes.builtin.perplexity import corpus_nll
from editprobe.probes.generation import greedy_decode, query_ids


@pytest.fixture
def loaded(trained_llama):
    """A tiny model trained on its facts, so probabilities and argmaxes are not noise (the
    session's, its trained weights put back: conftest.py)."""
    return trained_llama


FACTS = [f for f in tiny_facts(0) if f[0] == "The mother tongue of {}"]
LANGUAGES = sorted({o for _, _, o in FACTS})


def _by_hand(model, tok, prompt: str, target: str) -> tuple[float, list[bool]]:
    """(mean NLL of the target's tokens, argmax hit per token) from one unbatched pass."""
    q, t = query_ids(tok, prompt), continuation_ids(tok, prompt, target)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([q + t])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    nll = [-float(logp[len(q) - 1 + i, tok_id]) for i, tok_id in enumerate(t)]
    hits = [int(logits[len(q) - 1 + i].argmax()) == tok_id for i, tok_id in enumerate(t)]
    return sum(nll) / len(nll), hits


def _cf(i: int, **kw) -> EditRecord:
    """Record i: a fact the model knows (o), another language as o*, two kinds of prompts."""
    template, subject, true = FACTS[i]
    new = next(o for o in LANGUAGES if o != true)
    others = [f for f in FACTS if f[1] != subject][:2]
    base = dict(id=str(i), subject=subject, template=template, target_new=new, target_true=true,
                paraphrase_prompts=(f"The mother tongue of {subject}", f"The birthplace of {subject}")[: i + 1],
                neighborhood=tuple(PromptAnswer(prompt=t.format(s), answers=(true,)) for t, s, _ in others),
                source_format="counterfact")
    return EditRecord(**{**base, **kw})


def _ctx(loaded, records) -> ProbeContext:
    return ProbeContext(dataset="d", records=records, plan=None, model=loaded.model, tokenizer=loaded.tokenizer,
                        config=None)


def _mean(xs):
    return sum(xs) / len(xs)


def _prompt_values(loaded, records, prompts_of, expect_new=True):
    """Per record: mean over its prompts of (success, magnitude) of the probability comparison."""
    success, magnitude = [], []
    for r in records:
        s, m = [], []
        for p in prompts_of(r):
            n, _ = _by_hand(loaded.model, loaded.tokenizer, p, r.target_new)
            o, _ = _by_hand(loaded.model, loaded.tokenizer, p, r.target_true)
            sign = 1 if expect_new else -1
            s.append(float(sign * (o - n) > 0))
            m.append(sign * (math.exp(-n) - math.exp(-o)))
        success.append(_mean(s))
        magnitude.append(_mean(m))
    return round(100 * _mean(success), 1), round(100 * _mean(magnitude), 1)


@pytest.mark.parametrize("probe,prompts_of,expect_new", [
    ("efficacy", lambda r: [r.query], True),
    ("paraphrase", lambda r: list(r.paraphrase_prompts), True),
    ("neighborhood", lambda r: [pa.prompt for pa in r.neighborhood], False),
])
def test_probability_comparison_by_hand(loaded, probe, prompts_of, expect_new):
    records = [_cf(i) for i in range(3)]
    p = PROBES[probe]
    state = p.measure(_ctx(loaded, records), "baseline", None)
    metrics = p.metrics(state, state)
    assert (metrics["prob"].value, metrics["magnitude"].value) == _prompt_values(loaded, records, prompts_of,
                                                                                  expect_new)
    assert metrics["magnitude"].value != 0.0  # a trained model: the probabilities are not noise
    assert metrics["prob"].n == 3 and "probability comparison" in metrics["prob"].label


def test_exact_match_by_hand(loaded):
    records = [_cf(i) for i in range(3)]
    state = PROBES["paraphrase"].measure(_ctx(loaded, records), "baseline", None)
    per_record = [_mean([float(all(_by_hand(loaded.model, loaded.tokenizer, p, r.target_new)[1]))
                         for p in r.paraphrase_prompts]) for r in records]
    assert PROBES["paraphrase"].metrics(state, state)["EM"].value == round(100 * _mean(per_record), 1)


def test_neighborhood_exact_match_follows_the_unedited_continuation(loaded):
    records = [_cf(i) for i in range(2)]
    probe, ctx = PROBES["neighborhood"], _ctx(loaded, records)
    base = probe.measure(ctx, "baseline", None)
    assert probe.metrics(base, base)["EM"].value == 100.0  # the reference is this very model
    w = loaded.model.model.layers[1].mlp.down_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.add_(torch.randn_like(w) * 5)  # "edit": change what the model says
        after = probe.measure(ctx, "positive", base)
        tok = loaded.tokenizer
        by_hand = []
        for r in records:
            hits = []
            for pa in r.neighborhood:
                n = len(continuation_ids(tok, pa.prompt, pa.answers[0]))
                before = base["reference"][len(by_hand) * 2 + len(hits)]
                now = greedy_decode(loaded.model, tok, [query_ids(tok, pa.prompt)], n, stop_at_eos=False)[0]
                hits.append(float(list(now) == before))
            by_hand.append(_mean(hits))
        assert probe.metrics(after, base)["EM"].value == round(100 * _mean(by_hand), 1)
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_zsre_token_accuracy_by_hand(loaded):
    records = [EditRecord(id=str(i), subject=s, template="What is the native language of {}?", target_new=t,
                          paraphrase_prompts=(f"Which language does {s} speak?",), is_question=True,
                          neighborhood=(PromptAnswer(prompt="nq question: who plays the piano", answers=(a,)),),
                          source_format="zsre")
               for i, (s, t, a) in enumerate([("Alice", "English", "Bob"), ("Carol", "German language", "Erin")])]
    ctx = _ctx(loaded, records)
    for probe, prompts_of, target_of in [
        ("efficacy", lambda r: [r.query], lambda r, p: r.target_new),
        ("paraphrase", lambda r: list(r.paraphrase_prompts), lambda r, p: r.target_new),
        ("neighborhood", lambda r: [pa.prompt for pa in r.neighborhood], lambda r, p: r.neighborhood[0].answers[0]),
    ]:
        p = PROBES[probe]
        state = p.measure(ctx, "baseline", None)
        per_record = []
        for r in records:
            hits = [h for q in prompts_of(r) for h in _by_hand(loaded.model, loaded.tokenizer, q, target_of(r, q))[1]]
            per_record.append(_mean(hits))
        metrics = p.metrics(state, state)
        assert set(metrics) == {"tokens"}
        assert metrics["tokens"].value == round(100 * _mean(per_record), 1), probe


def test_knowedit_locality_compares_with_the_unedited_argmax(loaded):
    records = [EditRecord(id="0", subject="Alice", template="The mother tongue of {} is", target_new="English",
                          neighborhood=(PromptAnswer(prompt="Bob plays", answers=("the piano",)),),
                          source_format="knowedit")]
    probe, ctx = PROBES["neighborhood"], _ctx(loaded, records)
    base = probe.measure(ctx, "baseline", None)
    assert probe.metrics(base, base)["tokens"].value == 100.0
    w = loaded.model.model.layers[0].mlp.down_proj.weight
    saved = w.detach().clone()
    tok = loaded.tokenizer
    q, t = query_ids(tok, "Bob plays"), continuation_ids(tok, "Bob plays", "the piano")

    def argmax():
        with torch.no_grad():
            logits = loaded.model(input_ids=torch.tensor([q + t])).logits[0]
        return [int(logits[len(q) - 1 + i].argmax()) for i in range(len(t))]

    before = argmax()
    try:
        with torch.no_grad():
            w.add_(torch.randn_like(w) * 5)
        after = probe.measure(ctx, "positive", base)
        now = argmax()
        expected = round(100 * _mean([a == b for a, b in zip(before, now)]), 1)
        assert probe.metrics(after, base)["tokens"].value == expected
    finally:
        with torch.no_grad():
            w.copy_(saved)


def test_portability_and_multihop_token_accuracy_by_hand(loaded):
    hop = (PromptAnswer(prompt="Who is the head of state of the country of Alice?", answers=("Bob",), kind="multi_hop"),
           PromptAnswer(prompt="Where was Alice born?", answers=("Rome city",), kind="multi_hop"))
    records = [EditRecord(id=f"{c}-{k}", subject="Alice", template="{} was born in", target_new="Rome",
                          case_id=str(c), portability=hop, source_format="mquake") for c in (0, 1) for k in (0, 1)]
    state = PROBES["multihop"].measure(_ctx(loaded, records), "baseline", None)
    hits = [h for pa in hop for h in _by_hand(loaded.model, loaded.tokenizer, pa.prompt, pa.answers[0])[1]]
    outcome, rows = PROBES["multihop"].no_edit(None, state)
    assert outcome.metrics["tokens"].value == round(100 * _mean(hits), 1)  # both cases ask the same questions
    assert outcome.metrics["tokens"].n == 2 and len(rows) == 4  # two cases, each question once per case

    # answers of different lengths: EasyEdit's per-question mean and the pooled tokens differ
    port = [EditRecord(id="0", subject="Alice", template="{} was born in", target_new="Rome", source_format="knowedit",
                       portability=(PromptAnswer(prompt="Alice lives in the city of", answers=("Rome",), kind="Reasoning"),
                                    PromptAnswer(prompt="The birthplace of Alice is", answers=("Rome city of Italy",),
                                                 kind="Reasoning")))]
    state = PROBES["portability"].measure(_ctx(loaded, port), "baseline", None)
    per_question = [_by_hand(loaded.model, loaded.tokenizer, pa.prompt, pa.answers[0])[1] for pa in port[0].portability]
    metrics = PROBES["portability"].no_edit(None, state)[0].metrics
    assert metrics["tokens"].value == round(100 * _mean([_mean(h) for h in per_question]), 1)  # EasyEdit's
    assert metrics["tokens_pooled"].value == round(100 * _mean([h for q in per_question for h in q]), 1)


def test_perplexity_by_hand(loaded):
    tok = loaded.tokenizer
    texts = ["The capital of France is Paris .", "Michael Jordan plays basketball and Toko Yasuda plays guitar ."]
    nll, count = corpus_nll(loaded.model, tok, texts, batch_size=2)
    total, n = 0.0, 0
    for text in texts:
        ids = encode(tok, text)
        with torch.no_grad():
            logp = torch.log_softmax(loaded.model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        total -= sum(float(logp[i, ids[i + 1]]) for i in range(len(ids) - 1))
        n += len(ids) - 1
    assert count == n and nll == pytest.approx(total, rel=1e-5)
    assert math.exp(nll / count) == pytest.approx(math.exp(total / n), rel=1e-5)


def test_ngram_entropy_by_hand():
    from editprobe.probes.builtin.fluency import ngram_entropy

    # "a b a b": bigrams ab, ba, ab -> p = 2/3, 1/3; trigrams aba, bab -> 1/2, 1/2.
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)
    assert ngram_entropy("x x x x x x") == 0.0  # one repeated n-gram: no information


def test_fluency_probe_is_opt_in_and_seeded(loaded):
    from editprobe.probes import default_probes

    assert "fluency" not in default_probes()
    records = [_cf(0)]
    a = PROBES["fluency"].measure(_ctx(loaded, records), "baseline", None)
    b = PROBES["fluency"].measure(_ctx(loaded, records), "baseline", None)
    assert a == b and a["texts"][0].startswith(records[0].query)
    outcome, rows = PROBES["fluency"].no_edit(None, a)
    assert outcome.metrics["entropy"].value >= 0 and len(rows) == 1


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_logits_only_at_the_targets_change_nothing(model_type):
    from editprobe.models.tiny import tiny_model
    from editprobe.probes.scoring import keeps_logits, teacher_forced

    loaded = tiny_model(model_type, seed=1)
    assert keeps_logits(loaded.model)
    pairs = [("The capital of France is", "Paris"), ("Bob", "plays the piano and the violin"), ("Alice speaks", "a")]
    fast = teacher_forced(loaded.model, loaded.tokenizer, pairs, batch_size=3, only_targets=True)
    full = teacher_forced(loaded.model, loaded.tokenizer, pairs, batch_size=3, only_targets=False)
    for a, b in zip(fast, full):
        assert a.predicted == b.predicted and a.target == b.target
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_continuations_of_a_cached_prompt_score_as_full_passes(model_type):
    from editprobe.models.tiny import tiny_model
    from editprobe.probes.scoring import score_continuations, teacher_forced_ids

    loaded = tiny_model(model_type, seed=2)
    tok = loaded.tokenizer
    prompts = ["The capital of France is", "Bob", "Alice speaks the language of her mother and"]
    targets = [["Paris", "Rome city"], ["plays the piano and the violin", "x"], ["French"]]
    pairs = [(query_ids(tok, p), continuation_ids(tok, p, t)) for p, ts in zip(prompts, targets) for t in ts]
    full = teacher_forced_ids(loaded.model, tok, pairs, batch_size=2)
    shared = score_continuations(loaded.model, tok, [query_ids(tok, p) for p in prompts],
                                 [[continuation_ids(tok, p, t) for t in ts] for p, ts in zip(prompts, targets)],
                                 batch_size=2)
    flat = [s for row in shared for s in row]
    assert [s.target for s in flat] == [s.target for s in full]
    for a, b in zip(flat, full):
        assert a.predicted == b.predicted
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
def test_cached_greedy_continuations_equal_generate(model_type):
    from editprobe.models.tiny import tiny_model
    from editprobe.probes.scoring import greedy_continuations

    loaded = tiny_model(model_type, seed=4)
    tok = loaded.tokenizer
    prompts = [query_ids(tok, p) for p in ("The capital of France is", "Bob", "Alice speaks the language of her")]
    lengths = [3, 1, 2]
    fast = greedy_continuations(loaded.model, tok, prompts, lengths, batch_size=2)
    for p, n, ids in zip(prompts, lengths, fast):
        assert ids == greedy_decode(loaded.model, tok, [p], n, stop_at_eos=False)[0]
