"""The batched engine (probes/batched.py) against the straightforward computation: one
prompt at a time, no padding, no cache, a full forward per decoded token. Exact matches and
decoded tokens must be identical, log-probabilities equal to 1e-5."""

from __future__ import annotations

import pytest
import torch

from editprobe.models.tiny import offline_tokenizer, tiny_model
from editprobe.models.tokens import continuation_ids
from editprobe.probes.batched import length_batches, run_prompts, shared_prefix
from editprobe.probes.generation import query_ids

@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # tiny models: threads only contend


PROMPTS = ["The capital of France is", "Bob", "Alice speaks the language of her mother and",
           "The mother tongue of Danielle Darrieux is", "Toko Yasuda plays"]
TARGETS = [["Paris", "Rome city"], ["plays the piano and the violin", "x"], ["French"], ["English", "French", "English"], []]


@torch.no_grad()
def _by_hand(model, prompt: list[int], target: list[int]) -> tuple[list[int], list[float]]:
    logits = model(input_ids=torch.tensor([prompt + target[:-1]])).logits[0].float()
    window = logits[len(prompt) - 1 :]
    logp = torch.log_softmax(window, -1)
    return window.argmax(-1).tolist(), [float(logp[i, t]) for i, t in enumerate(target)]


@torch.no_grad()
def _greedy_by_hand(model, prompt: list[int], n: int, eos: set[int]) -> list[int]:
    seq, out = list(prompt), []
    for _ in range(n):
        token = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
        out.append(token)
        seq.append(token)
        if token in eos:
            break
    return out


def _check(loaded, prompts: list[list[int]], conts, decode, eos, budget):
    scored, decoded = run_prompts(loaded.model, loaded.tokenizer, prompts, conts, decode, eos, budget=budget)
    for p, cs, got in zip(prompts, conts, scored):
        assert len(got) == len(cs)
        for t, (pred, lp) in zip(cs, got):
            want_pred, want_lp = _by_hand(loaded.model, p, t)
            assert pred == want_pred
            assert lp == pytest.approx(want_lp, abs=1e-5)
    if decode is not None:
        for p, n, ids in zip(prompts, decode, decoded):
            assert ids == _greedy_by_hand(loaded.model, p, n, eos)


@pytest.mark.parametrize("model_type", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("budget", [8, 4096])  # many small batches, or one
def test_scores_and_decodes_as_one_prompt_at_a_time(model_type, budget):
    loaded = tiny_model(model_type, seed=3)
    tok = loaded.tokenizer
    prompts = [query_ids(tok, p) for p in PROMPTS]
    conts = [[continuation_ids(tok, p, t) for t in ts] for p, ts in zip(PROMPTS, TARGETS)]
    _check(loaded, prompts, conts, [3, 1, 0, 5, 2], set(), budget)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_a_shared_prefix_is_run_once_and_changes_nothing(model_type):
    """Chat prompts share the system turn and the instruction: that prefix is one pass."""
    loaded = tiny_model(model_type, seed=5)
    tok = loaded.tokenizer
    head = "Judge whether the following statement is true or false: "
    prompts = [query_ids(tok, head + s) for s in ("Bob plays the piano", "The capital of France is Paris",
                                                   "Alice speaks", "Toko Yasuda plays guitar in Tokyo")]
    assert shared_prefix(prompts) >= 4
    conts = [[continuation_ids(tok, head + "Alice speaks", "French")] if i == 2 else [] for i in range(4)]
    _check(loaded, prompts, conts, [4, 4, 4, 4], set(), budget=16)


def test_decoding_stops_at_eos_and_keeps_it():
    loaded = tiny_model("llama", seed=6)
    tok = loaded.tokenizer
    prompts = [query_ids(tok, p) for p in PROMPTS]
    # Make the second greedy token of the first prompt an "EOS": that row must end there.
    eos = {_greedy_by_hand(loaded.model, prompts[0], 2, set())[1]}
    _, decoded = run_prompts(loaded.model, tok, prompts, None, [6] * len(prompts), eos)
    assert len(decoded[0]) == 2 and decoded[0][-1] in eos
    for p, ids in zip(prompts, decoded):
        assert ids == _greedy_by_hand(loaded.model, p, 6, eos)


def test_length_batches_respect_budget_and_padding():
    lengths = [5, 30, 6, 7, 31, 5, 100, 6]
    batches = length_batches(lengths, budget=40, overhead=4)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        widths = [lengths[i] for i in b]
        assert widths == sorted(widths)
        assert len(b) == 1 or len(b) * max(widths) <= 40
    assert [lengths[i] for i in batches[-1]] == [100]

    def cost(bs):  # padded tokens + the overhead per forward, what the cuts minimize
        return sum(len(b) * max(lengths[i] for i in b) + 4 for b in bs)

    one_per_length = [[i for i in range(8) if lengths[i] == n] for n in sorted(set(lengths))]
    assert cost(batches) <= cost(one_per_length)
    assert length_batches(lengths, budget=1000, overhead=1000) == [sorted(range(8), key=lambda i: lengths[i])]
    assert length_batches([], budget=10) == []


def test_negation_queries_equal_the_separate_match_and_decode_paths():
    """score_queries (one pass) gives what exact_match_batch + decode_targets gave."""
    from editprobe.probes.exact import decode_targets, exact_match_batch, match_and_decode

    loaded = tiny_model("llama", seed=7)
    tok = loaded.tokenizer
    pairs = [(p, ts[0]) for p, ts in zip(PROMPTS, TARGETS) if ts]
    matches, decoded = match_and_decode(loaded.model, tok, pairs, 3)
    assert matches == exact_match_batch(loaded.model, tok, pairs)
    assert decoded == decode_targets(loaded.model, tok, pairs, 3)


def test_fact_check_answers_equal_generate():
    from editprobe.probes.factcheck import ask_statements, fact_check_prompt
    from editprobe.probes.generation import decode_text, greedy_decode, prompt_ids

    loaded = tiny_model("llama", seed=8, tokenizer=offline_tokenizer("sentencepiece", chat_template=True))
    tok = loaded.tokenizer
    statements = ["Bob plays the piano", "The capital of France is Paris", "Alice speaks French"]
    got = ask_statements(loaded.model, tok, statements)
    prompts = [prompt_ids(tok, fact_check_prompt(tok, s), rendered_chat=True) for s in statements]
    want = greedy_decode(loaded.model, tok, prompts, 4, batch_size=16)
    assert [g for g, _ in got] == [decode_text(tok, ids) for ids in want]


def test_sliding_window_models_take_the_plain_path():
    """Gemma-2's cache layers slide: no cache surgery, the plain passes give the same."""
    from editprobe.models.resume_forward import supports_prefix_cache as cacheable
    from editprobe.probes.scoring import score_and_decode

    loaded = tiny_model("gemma2", seed=9)
    assert not cacheable(loaded.model)
    tok = loaded.tokenizer
    prompts = [query_ids(tok, p) for p in PROMPTS[:3]]
    conts = [[continuation_ids(tok, p, t) for t in ts] for p, ts in zip(PROMPTS[:3], TARGETS[:3])]
    scores, decoded = score_and_decode(loaded.model, tok, prompts, conts, lambda i, s: i + 1, stop_at_eos=False)
    for p, cs, got, ids, n in zip(prompts, conts, scores, decoded, (1, 2, 3)):
        for t, s in zip(cs, got):
            assert list(s.predicted) == _by_hand(loaded.model, p, t)[0]
        assert ids == _greedy_by_hand(loaded.model, p, n, set())
