"""Exact match: the teacher-forced fast path must agree with generate() (tiny models with
offline tokenizers, and SmolLM2 on real CounterFact prompts); batched greedy decoding must
equal one prompt at a time; the probe registry keeps one meaning per name."""

from __future__ import annotations

import pytest
import torch

from editprobe.data import load_records
from editprobe.data.negation import negate
from editprobe.models.tiny import offline_tokenizer, tiny_facts, tiny_model
from editprobe.probes.registry import DEFINITIONS as PROBES
from editprobe.probes.registry import ProbeDefinition
from editprobe.probes.registry import get_definition as get_probe
from editprobe.probes.registry import register_definition as register_probe
from editprobe.probes.exact import (
    decode_targets,
    exact_match_batch,
    exact_match_ids,
    generate_exact_match,
    target_pair_ids,
)
from editprobe.probes.generation import greedy_decode, query_ids

torch.set_num_threads(1)

QUERIES = [
    "The mother tongue of Danielle Darrieux is",
    "Alice",
    "Michael Jordan plays the position of a",
    "Apple , that was developed by",
    "Rome is",
]


def _generate_ids(model, tok, q: list[int], n: int) -> list[int]:
    return greedy_decode(model, tok, [q], n, batch_size=1, stop_at_eos=False)[0]


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_fast_path_equals_generate_on_ids(model_type):
    lm = tiny_model(model_type, seed=1)
    model, tok = lm.model, lm.tokenizer
    pairs, expected = [], []
    for i, query in enumerate(QUERIES):
        q = query_ids(tok, query)
        own = _generate_ids(model, tok, q, 1 + i % 4)  # the model's own continuation: must match
        wrong_last = own[:-1] + [(own[-1] + 1) % len(tok)]  # off by one token at the end: must not
        wrong_first = [(own[0] + 7) % len(tok)] + own[1:]
        for target, exp in ((own, True), (wrong_last, False), (wrong_first, False)):
            pairs.append((q, target))
            expected.append(exp)
    fast = exact_match_ids(model, tok, pairs, batch_size=4)
    slow = [_generate_ids(model, tok, q, len(t)) == t for q, t in pairs]
    assert fast == slow == expected


def test_string_paths_agree_on_a_model_that_knows_facts(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    facts = tiny_facts(0)[:24]
    # Known objects, and each fact's object swapped with another fact's (wrong) object.
    pairs = [(t.format(s), o) for t, s, o in facts]
    pairs += [(t.format(s), "Sydney" if o != "Sydney" else "Tokyo") for t, s, o in facts]
    fast = exact_match_batch(model, tok, pairs)
    slow = [generate_exact_match(model, tok, q, t)[0] for q, t in pairs]
    assert fast == slow
    assert sum(fast[:24]) >= 22  # the trained model knows its facts...
    assert sum(fast[24:]) <= 2  # ...and rarely says a random other object


def test_batch_size_and_order_do_not_change_results(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    facts = tiny_facts(0)
    pairs = [(t.format(s), o) for t, s, o in facts[:10]] + [("Bob", "plays football in Rome"), ("The", "Paris")]
    one = exact_match_batch(model, tok, pairs, batch_size=1)
    assert exact_match_batch(model, tok, pairs, batch_size=64) == one
    assert exact_match_batch(model, tok, pairs[::-1], batch_size=5) == one[::-1]
    assert any(one) and not all(one)


def test_decode_targets_reports_what_was_said(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    facts = tiny_facts(0)[:12]
    pairs = [(t.format(s), o) for t, s, o in facts] + [(t.format(s), "hockey") for t, s, _ in facts[:4]]
    decoded = decode_targets(model, tok, pairs, extra_tokens=2)
    fast = exact_match_batch(model, tok, pairs)
    assert [d.match for d in decoded] == fast
    for (query, target), d in zip(pairs, decoded):
        n_target = len(target_pair_ids(tok, query, target)[1])
        assert len(d.ids) <= n_target + 2
        if d.match:
            assert d.text.strip().startswith(target)


def test_greedy_decode_stops_each_row_at_its_own_eos():
    lm = tiny_model("llama", seed=3)
    model, tok = lm.model, lm.tokenizer
    prompts = [query_ids(tok, q) for q in QUERIES]
    free = greedy_decode(model, tok, prompts, 5, stop_at_eos=False)
    # Declare the first prompt's first generated token an end of turn: that row must end
    # right there (keeping it), the other rows must be cut at their own first such token.
    stop = free[0][0]
    saved = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = stop
    try:
        stopped = greedy_decode(model, tok, prompts, 5)
    finally:
        model.generation_config.eos_token_id = saved
    assert stopped[0] == [stop]
    for full, cut in zip(free, stopped):
        end = full.index(stop) + 1 if stop in full else len(full)
        assert cut == full[:end]


def test_greedy_decode_rejects_bad_arguments():
    lm = tiny_model("llama")
    with pytest.raises(ValueError, match="max_new_tokens"):
        greedy_decode(lm.model, lm.tokenizer, [[1, 2]], 0)
    with pytest.raises(ValueError, match="empty prompt"):
        greedy_decode(lm.model, lm.tokenizer, [[]], 2)


def test_query_ids_are_the_prefix_of_continuation_ids():
    # A BOS-adding tokenizer: the query ids carry the BOS, the target ids never do.
    tok = offline_tokenizer("sentencepiece")
    q, t = target_pair_ids(tok, QUERIES[0], "French")
    assert q[0] == tok.bos_token_id and tok.bos_token_id not in t
    assert tok(QUERIES[0] + " French")["input_ids"] == q + t


# --- the registry -------------------------------------------------------------------------


def test_builtin_probes_are_labelled_and_versioned():
    names = {"exact-match/fast", "exact-match/generate", "negation/PP", "negation/PN", "negation/NN",
             "negation/NP", "negation/no-edit-PN", "factcheck/accuracy", "factcheck/no-edit",
             "classic/paraphrase-efficacy", "classic/neighborhood-specificity"}
    assert names <= set(PROBES)
    assert "negated template" in get_probe("negation/PN").label and "new object" in get_probe("negation/PN").label
    assert "old object" in get_probe("negation/no-edit-PN").label
    assert all(p.version >= 1 and p.label for p in PROBES.values())


def test_register_probe_keeps_one_meaning_per_name():
    probe = ProbeDefinition(name="test/dummy", label="exact-match of nothing")
    try:
        assert register_probe(probe) is probe
        register_probe(ProbeDefinition(name="test/dummy", label="exact-match of nothing"))  # identical: fine
        with pytest.raises(ValueError, match="already registered"):
            register_probe(ProbeDefinition(name="test/dummy", version=2, label="something else"))
        newer = register_probe(ProbeDefinition(name="test/dummy", version=2, label="something else"), replace=True)
        assert get_probe("test/dummy") == newer
        with pytest.raises(KeyError, match="unknown probe definition"):
            get_probe("test/none")
    finally:
        PROBES.pop("test/dummy", None)


# --- SmolLM2 ------------------------------------------------------------------------------


@pytest.mark.integration
def test_fast_path_agrees_with_generate_on_smollm2(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    records = load_records("counterfact-sample", limit=10).records
    pairs = []
    for r in records:
        negated = negate(r.template, r.relation_id).negated
        assert negated is not None
        for query in (r.query, negated.format(r.subject)):
            pairs += [(query, r.target_true), (query, r.target_new)]
    # Plus the model's own greedy answers, so that matches are guaranteed to be present.
    own = greedy_decode(model, tok, [query_ids(tok, q) for q, _ in pairs[::4]], 3, stop_at_eos=False)
    pairs += [(q, tok.decode(ids).strip()) for (q, _), ids in zip(pairs[::4], own)]
    assert len(pairs) >= 30
    fast = exact_match_batch(model, tok, pairs)
    slow = [generate_exact_match(model, tok, q, t)[0] for q, t in pairs]
    assert fast == slow
    assert sum(fast) >= 10 and not all(fast)  # both outcomes are exercised
