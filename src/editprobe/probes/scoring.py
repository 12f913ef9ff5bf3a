"""Teacher-forced scoring of a continuation: one forward pass over query + target gives, at
every target position, the log-probability of the target token and the model's argmax.
Every classic metric is a function of these (probability comparison, exact match, token
accuracy); the target ids are always the target as a continuation of the query
(``continuation_ids``), never the target encoded alone. Several targets of one prompt, and
greedy text after it, come from one prompt pass: :func:`score_and_decode` (``batched.py``)."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..models.resume_forward import supports_prefix_cache
from ..models.decoding import decoding_from
from ..models.tokens import continuation_ids, make_batch
from .batched import TOKEN_BUDGET, run_prompts
from .generation import _eos_ids, greedy_decode, query_ids

IdPair = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class TokenScores:
    target: tuple[int, ...]
    predicted: tuple[int, ...]  # argmax at each target position
    logprobs: tuple[float, ...] | None  # log p(target token) at each position (None: not asked)

    @property
    def exact(self) -> bool:
        return self.predicted == self.target

    @property
    def token_hits(self) -> list[bool]:
        return [p == t for p, t in zip(self.predicted, self.target)]

    @property
    def mean_nll(self) -> float:
        """The mean negative log-probability per target token (ROME's "prob" of a target)."""
        assert self.logprobs is not None
        return -sum(self.logprobs) / len(self.logprobs)

    @property
    def mean_prob(self) -> float:
        """exp(−mean NLL): the per-token geometric-mean probability."""
        return math.exp(-self.mean_nll)


def text_pair_ids(tok, query: str, target: str) -> tuple[list[int], list[int]]:
    return query_ids(tok, query), continuation_ids(tok, query, target)


def keeps_logits(model) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers' causal LMs do):
    then vocabulary logits are computed only at the target positions."""
    return "logits_to_keep" in inspect.signature(model.forward).parameters


@torch.no_grad()
def teacher_forced_ids(model, tok, pairs: Sequence[IdPair], batch_size: int = 32,
                       logprobs: bool = True, only_targets: bool | None = None) -> list[TokenScores]:
    """For each (query_ids, target_ids): the argmax and (``logprobs``) the log-probability of
    the target token after query_ids + target_ids[:i], for every i. ``only_targets``
    (default: when the model supports it) projects onto the vocabulary only at the target
    positions; the result is the same, the lm_head work is not."""
    device = next(model.parameters()).device
    only_targets = keeps_logits(model) if only_targets is None else only_targets
    # Similar lengths share a batch, so little compute goes into padding.
    order = sorted(range(len(pairs)), key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
    results: dict[int, TokenScores] = {}
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        seqs, spans = [], []
        for i in idx:
            q, t = list(pairs[i][0]), list(pairs[i][1])
            if not q or not t:
                raise ValueError(f"pair {i}: query and target ids must both be non-empty")
            seqs.append(q + t[:-1])
            spans.append((len(q) - 1, t))
        # Right padding: in a causal model no real token attends to the pads after it, so
        # every row computes exactly what it would alone.
        b = make_batch(tok, seqs, "right").to(device)
        kwargs = {}
        if only_targets:
            width = max(len(t) for _, t in spans)
            kwargs["logits_to_keep"] = torch.tensor(
                [[first + min(j, len(t) - 1) for j in range(width)] for first, t in spans], device=device)
        # From each query's last token on, every position is a decoding step (models/decoding.py).
        with decoding_from([first for first, _ in spans]):
            logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False, **kwargs).logits
        for row, (i, (first, target)) in enumerate(zip(idx, spans)):
            offset = 0 if only_targets else first
            window = logits[row, offset : offset + len(target)].float()
            lp = None
            if logprobs:
                picked = torch.log_softmax(window, dim=-1).gather(1, torch.tensor(target, device=device)[:, None])
                lp = tuple(picked[:, 0].tolist())
            results[i] = TokenScores(target=tuple(target), predicted=tuple(window.argmax(-1).tolist()), logprobs=lp)
    return [results[i] for i in range(len(pairs))]


def teacher_forced(model, tok, pairs: Sequence[tuple[str, str]], batch_size: int = 32,
                   logprobs: bool = True, only_targets: bool | None = None) -> list[TokenScores]:
    """:func:`teacher_forced_ids` for (query, target) texts."""
    return teacher_forced_ids(model, tok, [text_pair_ids(tok, q, t) for q, t in pairs], batch_size, logprobs,
                              only_targets)


def _scores(targets: Sequence[Sequence[int]], scored) -> list[TokenScores]:
    return [TokenScores(target=tuple(t), predicted=tuple(pred), logprobs=None if lp is None else tuple(lp))
            for t, (pred, lp) in zip(targets, scored)]


def score_and_decode(model, tok, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                     decode: Sequence[int] | Callable[[int, list[TokenScores]], int] | None = None,
                     stop_at_eos: bool = True, logprobs: bool = True, budget: int = TOKEN_BUDGET
                     ) -> tuple[list[list[TokenScores]], list[list[int]] | None]:
    """Each prompt run once (``batched.run_prompts``): its continuations teacher-forced and,
    with ``decode``, ``decode[i]`` greedy tokens after prompt i (EOS kept and ending the
    row with ``stop_at_eos``), the same tokens as ``greedy_decode``. ``decode`` may be a
    function of (prompt index, its scores). Models whose cache layers are not plain
    (sliding windows) take the plain paths."""
    if not supports_prefix_cache(model):
        flat = [(p, c) for p, cs in zip(prompts, continuations) for c in cs]
        it = iter(teacher_forced_ids(model, tok, flat, logprobs=logprobs) if flat else [])
        scores = [[next(it) for _ in cs] for cs in continuations]
        if decode is None:
            return scores, None
        lengths = [decode(i, s) for i, s in enumerate(scores)] if callable(decode) else list(decode)
        return scores, _plain_decode(model, tok, prompts, lengths, stop_at_eos)
    eos = _eos_ids(model, tok) if stop_at_eos else set()
    lengths_of = decode
    if callable(decode):
        lengths_of = lambda i, raw: decode(i, _scores(continuations[i], raw))  # noqa: E731
    scored, decoded = run_prompts(model, tok, prompts, continuations, lengths_of, eos, logprobs, budget)
    return [_scores(cs, s) for cs, s in zip(continuations, scored)], decoded


def _plain_decode(model, tok, prompts, lengths, stop_at_eos: bool) -> list[list[int]]:
    """``greedy_decode`` once per distinct length, so no row decodes more than it asks."""
    out: list[list[int]] = [[] for _ in prompts]
    for n in sorted(set(lengths) - {0}):
        rows = [i for i, m in enumerate(lengths) if m == n]
        for i, ids in zip(rows, greedy_decode(model, tok, [prompts[i] for i in rows], n, stop_at_eos=stop_at_eos)):
            out[i] = ids
    return out


def score_continuations(model, tok, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                        batch_size: int = 32, logprobs: bool = True) -> list[list[TokenScores]]:
    """:func:`teacher_forced_ids` for several continuations of each prompt, the prompt run
    once (``batch_size`` is kept for callers; batches are cut by a token budget)."""
    return score_and_decode(model, tok, prompts, continuations, logprobs=logprobs)[0]


def greedy_continuations(model, tok, prompts: Sequence[Sequence[int]], lengths: Sequence[int],
                         batch_size: int = 64) -> list[list[int]]:
    """The greedy continuation of ``lengths[i]`` tokens after each prompt (EOS is a token like
    any other): the same tokens as ``greedy_decode(..., stop_at_eos=False)``."""
    decoded = score_and_decode(model, tok, prompts, [[] for _ in prompts], lengths, stop_at_eos=False)[1]
    assert decoded is not None
    return decoded
