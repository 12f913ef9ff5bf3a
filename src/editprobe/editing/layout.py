"""What one optimization step feeds the model.

Causal attention means tokens before the subject's last token never see the free vector,
at any layer: their keys and values are constants of the optimization. With
``prefix_cache`` those tokens run once (left-padded, into a KV cache) and every step runs
only the suffix that starts at the subject's last token, attending to the cache — about
5× fewer tokens per step with MEMIT's 10-token context prefixes. Without it, steps run the
full padded rows (needed where the method changes positions, e.g. NAMET's padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch

from ..models.tokens import Batch, make_batch, pad_id
from .prompts import Row, RowBatch


@dataclass
class StepBatch:
    rows: list[Row]  # positions are in this batch's own coordinates
    batch: Batch  # the tokens each step feeds (suffixes, or full rows)
    attention_mask: torch.Tensor  # over cache + step tokens
    position_ids: torch.Tensor | None
    cache: object | None  # a transformers Cache holding the prefixes' keys/values
    prefix_len: int
    prefix_kv: list = field(default_factory=list)  # each cache layer's (keys, values) after the prefix pass

    def subject_positions(self) -> torch.Tensor:
        return torch.tensor([self.batch.position(i, r.subject_index) for i, r in enumerate(self.rows)])

    def request_index(self) -> torch.Tensor:
        return torch.tensor([r.request for r in self.rows])

    def select(self, keep: list[int]) -> "StepBatch":
        """Rows ``keep`` only. The cache is narrowed in place (finished rows never return)."""
        idx = torch.tensor(keep, dtype=torch.long)
        b = self.batch
        sub = Batch(b.input_ids[idx], b.attention_mask[idx], [b.lengths[i] for i in keep], b.padding_side)
        dev_idx = idx.to(self.attention_mask.device)
        prefix_kv = [(k[dev_idx], v[dev_idx]) for k, v in self.prefix_kv]
        if self.cache is not None:
            for layer, (k, v) in zip(self.cache.layers, prefix_kv):
                layer.keys, layer.values = k, v
        return StepBatch(
            [self.rows[i] for i in keep], sub, self.attention_mask[dev_idx],
            None if self.position_ids is None else self.position_ids[dev_idx],
            self.cache, self.prefix_len, prefix_kv,
        )

    def forward_kwargs(self) -> dict:
        kw = dict(input_ids=self.batch.input_ids, attention_mask=self.attention_mask, use_cache=self.cache is not None)
        if self.position_ids is not None:
            kw["position_ids"] = self.position_ids
        if self.cache is not None:
            kw["past_key_values"] = self.cache
        return kw

    def after_step(self) -> None:
        """Drop the keys/values the step appended, keeping only the prefixes."""
        if self.cache is not None:
            # Put the prefix tensors back: a cropped view would keep this step's graph alive.
            for layer, (keys, values) in zip(self.cache.layers, self.prefix_kv):
                layer.keys, layer.values = keys, values


def full_layout(rb: RowBatch, device) -> StepBatch:
    b = rb.batch.to(device)
    return StepBatch(list(rb.rows), b, b.attention_mask, None, None, 0)


@torch.no_grad()
def prefix_cached_layout(model, tok, rb: RowBatch, device) -> StepBatch:
    """Run every row's tokens before its subject's last token once; return the suffixes."""
    from transformers import DynamicCache

    rows = rb.rows
    splits = [r.subject_index for r in rows]
    ends = [max([r.subject_index, *r.target_positions]) + 1 for r in rows]
    prefix_len = max(splits)
    prefixes = make_batch(tok, [r.ids[:s] if s else [pad_id(tok)] for r, s in zip(rows, splits)], "left")
    if prefix_len == 0:
        return full_layout(rb, device)
    # an empty prefix is one masked pad, so the cache is rectangular
    pmask = prefixes.attention_mask.clone()
    for i, s in enumerate(splits):
        if s == 0:
            pmask[i] = 0
    width = prefixes.input_ids.shape[1]
    cache = DynamicCache(config=model.config)
    if any(type(layer).__name__ != "DynamicLayer" for layer in cache.layers):
        return full_layout(rb, device)  # sliding-window layers evict entries: keep it simple
    ppos = (pmask.cumsum(-1) - 1).clamp(min=0)
    model(input_ids=prefixes.input_ids.to(device), attention_mask=pmask.to(device), position_ids=ppos.to(device),
          past_key_values=cache, use_cache=True)
    new_rows = [
        replace(r, ids=r.ids[s:e], subject_index=0, target_positions=[p - s for p in r.target_positions])
        for r, s, e in zip(rows, splits, ends)
    ]
    suffix = make_batch(tok, [r.ids for r in new_rows], "right")
    mask = torch.cat([pmask, suffix.attention_mask], dim=1).to(device)
    n_prefix = pmask.sum(-1, keepdim=True)
    positions = (n_prefix + torch.arange(suffix.input_ids.shape[1])[None, :]).to(device)
    prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    return StepBatch(new_rows, suffix.to(device), mask, positions, cache, width, prefix_kv)
