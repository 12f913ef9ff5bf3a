"""Exact match (docs/protocol.md#exact-match): greedy decoding of len(target_ids) tokens after
the query yields exactly target_ids. Greedy decoding is deterministic, so this equals one
teacher-forced pass over query + target in which the argmax at every target position is
the next target token — the fast path here. ``generate_exact_match`` is the slow
``generate()`` path the fast one is tested against; ``decode_targets`` decodes a few tokens
more than the target for per-sample records (what did the model say instead?).

``target_ids`` are always the target as a continuation of the query
(``continuation_ids``: encode(query + " " + target) minus encode(query), prefix checked),
never the target encoded alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict

from ..models.tokens import continuation_ids
from .generation import decode_text, greedy_decode, query_ids
from .registry import EXACT_FAST, EXACT_GENERATE
from .scoring import score_and_decode, teacher_forced_ids

FAST_LABEL = EXACT_FAST.label
GENERATE_LABEL = EXACT_GENERATE.label

IdPair = tuple[Sequence[int], Sequence[int]]


def target_pair_ids(tok, query: str, target: str) -> tuple[list[int], list[int]]:
    """(query ids, target ids as the query's continuation); raises TokenizationError when
    the query's last token would merge with the target."""
    return query_ids(tok, query), continuation_ids(tok, query, target)


def exact_match_ids(model, tok, pairs: Sequence[IdPair], batch_size: int = 32) -> list[bool]:
    """Teacher-forced exact match on ids: for each (query_ids, target_ids), is the argmax
    after query_ids + target_ids[:i] equal to target_ids[i] for every i?"""
    return [s.exact for s in teacher_forced_ids(model, tok, pairs, batch_size, logprobs=False)]


def exact_match_batch(model, tok, pairs: Sequence[tuple[str, str]], batch_size: int = 32) -> list[bool]:
    """For each (query, target): does greedy decoding after the query produce the target?"""
    return exact_match_ids(model, tok, [target_pair_ids(tok, q, t) for q, t in pairs], batch_size)


@torch.no_grad()
def generate_exact_match(model, tok, query: str, target: str) -> tuple[bool, str]:
    """The generate() path, one query at a time, no padding: (match, generated text)."""
    q, target_ids = target_pair_ids(tok, query, target)
    # stop_at_eos=False: exactly len(target_ids) tokens, as the definition says.
    new = greedy_decode(model, tok, [q], max_new_tokens=len(target_ids), batch_size=1, stop_at_eos=False)[0]
    return new == target_ids, decode_text(tok, new)


class Decoded(BaseModel):
    """A greedy continuation of len(target) + extra tokens after a query."""

    model_config = ConfigDict(frozen=True)

    text: str
    ids: tuple[int, ...]
    match: bool  # its first len(target_ids) tokens are target_ids (the generate() path)


def decode_targets(
    model, tok, pairs: Sequence[tuple[str, str]], extra_tokens: int = 3, batch_size: int = 16
) -> list[Decoded]:
    """Greedy (batched, left-padded) continuation of len(target_ids) + ``extra_tokens``
    tokens after each query, stopping at EOS, for per-sample records."""
    ids = [target_pair_ids(tok, q, t) for q, t in pairs]
    out: list[Decoded | None] = [None] * len(pairs)
    # One generate() call per distinct length, so no row decodes more than it needs.
    by_len: dict[int, list[int]] = {}
    for i, (_, t) in enumerate(ids):
        by_len.setdefault(len(t) + extra_tokens, []).append(i)
    for n_new, rows in by_len.items():
        gen = greedy_decode(model, tok, [ids[i][0] for i in rows], n_new, batch_size=batch_size)
        for i, new in zip(rows, gen):
            target = ids[i][1]
            out[i] = Decoded(text=decode_text(tok, new), ids=tuple(new), match=new[: len(target)] == target)
    return [d for d in out if d is not None]


def match_and_decode(model, tok, pairs: Sequence[tuple[str, str]], extra_tokens: int | None = 3
                     ) -> tuple[list[bool], list[Decoded] | None]:
    """:func:`exact_match_batch` and (unless ``extra_tokens`` is None) :func:`decode_targets`
    from one pass over each query: the decode continues from the query's cache."""
    ids = [target_pair_ids(tok, q, t) for q, t in pairs]
    if not ids:
        return [], ([] if extra_tokens is not None else None)
    lengths = [len(t) + extra_tokens for _, t in ids] if extra_tokens is not None else None
    scores, decoded = score_and_decode(model, tok, [q for q, _ in ids], [[t] for _, t in ids], lengths,
                                       stop_at_eos=True, logprobs=False)
    matches = [s[0].exact for s in scores]
    if decoded is None:
        return matches, None
    return matches, [Decoded(text=decode_text(tok, new), ids=tuple(new), match=new[: len(t)] == t)
                     for new, (_, t) in zip(decoded, ids)]
