"""Exact match (evaluation-protocol.md §1): greedy decoding of len(target_ids) tokens after
the query yields exactly target_ids. Greedy decoding is deterministic, so this equals one
teacher-forced pass over query + target in which the argmax at every target position is
the next target token — the fast path here. ``generate_exact_match`` is the slow
``generate()`` path the fast one is tested against.
"""

from __future__ import annotations

import torch

from ..models.tokens import continuation_ids, encode, make_batch

FAST_LABEL = "exact-match (teacher-forced greedy, argmax at every target token)"
GENERATE_LABEL = "exact-match (generate(), greedy, len(target) new tokens)"


@torch.no_grad()
def exact_match_batch(model, tok, pairs: list[tuple[str, str]], batch_size: int = 64) -> list[bool]:
    """For each (query, target): does greedy decoding after the query produce the target?"""
    device = next(model.parameters()).device
    results: list[bool] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        seqs, spans = [], []
        for query, target in chunk:
            q = encode(tok, query)
            t = continuation_ids(tok, query, target)
            seqs.append(q + t[:-1])
            spans.append((len(q) - 1, t))
        b = make_batch(tok, seqs, "right").to(device)
        logits = model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False).logits
        for i, (first, target) in enumerate(spans):
            pred = logits[i, first : first + len(target)].argmax(-1).tolist()
            results.append(pred == target)
    return results


@torch.no_grad()
def generate_exact_match(model, tok, query: str, target: str) -> tuple[bool, str]:
    """The generate() path: returns (match, generated text)."""
    device = next(model.parameters()).device
    target_ids = continuation_ids(tok, query, target)
    ids = torch.tensor([encode(tok, query)], device=device)
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=len(target_ids),
                         do_sample=False, pad_token_id=tok.pad_token_id)
    new = out[0, ids.shape[1] :].tolist()
    return new == target_ids, tok.decode(new)
