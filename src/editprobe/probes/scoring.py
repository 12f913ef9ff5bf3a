"""Teacher-forced scoring of a continuation: one forward pass over query + target gives, at
every target position, the log-probability of the target token and the model's argmax.
Every classic metric is a function of these (probability comparison, exact match, token
accuracy); the target ids are always the target as a continuation of the query
(``continuation_ids``), never the target encoded alone."""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..models.tokens import continuation_ids, make_batch, pad_id
from .generation import query_ids

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


def _cacheable(model) -> bool:
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    return all(type(layer).__name__ == "DynamicLayer" for layer in cache.layers)


def _prompt_batches(model, tok, prompts: Sequence[Sequence[int]], batch_size: int):
    """Prompts of similar length in left-padded batches, each run once into a fresh KV cache:
    yields (prompt indices, attention mask, cache, logits at the last position)."""
    from transformers import DynamicCache

    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        batch = make_batch(tok, [list(prompts[i]) for i in idx], "left").to(device)
        mask = batch.attention_mask
        cache = DynamicCache(config=model.config)
        last = model(input_ids=batch.input_ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                     past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        yield idx, mask, cache, last


@torch.no_grad()
def score_continuations(model, tok, prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[Sequence[int]]],
                        batch_size: int = 32, logprobs: bool = True) -> list[list[TokenScores]]:
    """:func:`teacher_forced_ids` for several continuations of each prompt, the prompt run
    once: its keys and values are cached (left padding, explicit positions, as the editing
    engine's prefix cache) and each continuation then costs only its own tokens. Models whose
    cache layers are not plain (sliding windows) take the plain path."""
    if not _cacheable(model):
        flat = [(p, c) for p, cs in zip(prompts, continuations) for c in cs]
        scores = iter(teacher_forced_ids(model, tok, flat, batch_size, logprobs))
        return [[next(scores) for _ in cs] for cs in continuations]
    device = next(model.parameters()).device
    out: list[list[TokenScores]] = [[] for _ in prompts]
    for idx, mask, cache, last in _prompt_batches(model, tok, prompts, batch_size):
        first = last.float()  # predicts each first target token
        prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
        n_prompt = mask.sum(-1, keepdim=True)
        # Every continuation of every prompt in one suffix pass: the prompt's cached keys
        # and values are repeated once per continuation.
        pairs = [(r, list(c)) for r, i in enumerate(idx) for c in continuations[i]]
        if any(not t for _, t in pairs):
            raise ValueError("a continuation must have at least one token")
        sel = torch.tensor([r for r, _ in pairs], device=device)
        for layer, (keys, values) in zip(cache.layers, prefix_kv):
            layer.keys, layer.values = keys[sel], values[sel]
        # Feed target[:-1]; a one-token target feeds one masked pad (its logits unused).
        suffix = make_batch(tok, [t[:-1] or [pad_id(tok)] for _, t in pairs], "right").to(device)
        suffix_mask = suffix.attention_mask * torch.tensor([[len(t) > 1] for _, t in pairs], device=device)
        logits = model(input_ids=suffix.input_ids, attention_mask=torch.cat([mask[sel], suffix_mask], 1),
                       position_ids=n_prompt[sel] + torch.arange(suffix.input_ids.shape[1], device=device),
                       past_key_values=cache, use_cache=True).logits.float()
        for j, (r, target) in enumerate(pairs):
            window = torch.cat([first[r : r + 1], logits[j, : len(target) - 1]], 0)
            lp = None
            if logprobs:
                picked = torch.log_softmax(window, -1).gather(1, torch.tensor(target, device=device)[:, None])
                lp = tuple(picked[:, 0].tolist())
            out[idx[r]].append(TokenScores(target=tuple(target), predicted=tuple(window.argmax(-1).tolist()),
                                           logprobs=lp))
    return out


@torch.no_grad()
def greedy_continuations(model, tok, prompts: Sequence[Sequence[int]], lengths: Sequence[int],
                         batch_size: int = 64) -> list[list[int]]:
    """The greedy continuation of ``lengths[i]`` tokens after each prompt (EOS is a token like
    any other), decoded with a KV cache without ``generate()``'s per-call overhead: the same
    tokens as ``greedy_decode(..., stop_at_eos=False)`` for the short answers probes need."""
    if not _cacheable(model):
        from .generation import greedy_decode

        out_ids = [[] for _ in prompts]
        for n in sorted(set(lengths)):
            rows = [i for i, m in enumerate(lengths) if m == n]
            for i, ids in zip(rows, greedy_decode(model, tok, [prompts[i] for i in rows], n, batch_size,
                                                  stop_at_eos=False)):
                out_ids[i] = ids
        return out_ids
    out: list[list[int]] = [[] for _ in prompts]
    for idx, mask, cache, last in _prompt_batches(model, tok, prompts, batch_size):
        step = last.argmax(-1)
        tokens = [step]
        position = mask.sum(-1, keepdim=True)
        for _ in range(max(lengths[i] for i in idx) - 1):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            logits = model(input_ids=step[:, None], attention_mask=mask, position_ids=position, past_key_values=cache,
                           use_cache=True).logits
            step = logits[:, -1].argmax(-1)
            tokens.append(step)
            position = position + 1
        ids = torch.stack(tokens, 1).tolist()
        for row, i in enumerate(idx):
            out[i] = ids[row][: lengths[i]]
    return out
