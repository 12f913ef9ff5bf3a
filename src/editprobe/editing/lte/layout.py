"""What one optimization step feeds the model.

Causal attention means tokens before the subject's last token never see the free vector,
at any layer: their keys and values are constants of the optimization. With
``prefix_cache`` those tokens run once (left-padded, into a KV cache) and every step runs
only the suffix that starts at the subject's last token, attending to the cache — about
5× fewer tokens per step with MEMIT's 10-token context prefixes. Without it, steps run the
full padded rows (needed where the method changes positions, e.g. NAMET's padding).

Suffixes differ in length (a KL prompt's is one token, a rewriting prompt's runs to the
end of the target), and every padded slot costs a full forward and backward through the
blocks above the edit layer at every step. So rows are split into groups of similar
suffix length, each with its own cache and padding (:func:`suffix_groups`); a step runs
one forward per group and reassembles the rows in their original order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from ...models.resume_forward import ForwardInputs, supports_prefix_cache
from ...models.tokens import Batch, make_batch, pad_id
from ..prompts import Row, RowBatch

# A forward's fixed cost (Python, small-matrix inefficiency), in padded tokens: what a
# separate group must save to be worth running. Measured on the built-in model (CPU).
GROUP_OVERHEAD_TOKENS = 24


@dataclass
class Group:
    """Rows of a StepBatch that run in one forward pass."""

    rows: torch.Tensor  # indices into the StepBatch's rows
    input_ids: torch.Tensor  # [g, width]
    attention_mask: torch.Tensor  # [g, prefix + width]: over this group's cache and step tokens
    position_ids: torch.Tensor | None
    cache: object | None  # a transformers Cache holding this group's prefix keys/values
    prefix_kv: list = field(default_factory=list)  # each cache layer's (keys, values) after the prefix pass

    @property
    def width(self) -> int:
        return self.input_ids.shape[1]

    def forward_kwargs(self) -> dict:
        return ForwardInputs(self.input_ids, self.position_ids, self.cache, self.attention_mask).forward_kwargs()

    def restore_cache(self) -> None:
        """Put the prefix tensors back (a cropped view would keep the step's graph alive)."""
        if self.cache is not None:
            for layer, (keys, values) in zip(self.cache.layers, self.prefix_kv):
                layer.keys, layer.values = keys, values

    def narrowed(self, local: torch.Tensor, rows: torch.Tensor) -> "Group":
        """Only this group's rows ``local`` (indices into the group), renumbered ``rows``."""
        kv = [(k[local], v[local]) for k, v in self.prefix_kv]
        if self.cache is not None:
            for layer, (k, v) in zip(self.cache.layers, kv):
                layer.keys, layer.values = k, v
        ids = self.input_ids[local]
        width = int(self.attention_mask[local, -self.width:].sum(-1).max())  # the group may shrink
        prefix = self.attention_mask.shape[1] - self.width
        return Group(rows, ids[:, :width], self.attention_mask[local, : prefix + width],
                     None if self.position_ids is None else self.position_ids[local, :width], self.cache, kv)


@dataclass
class StepBatch:
    rows: list[Row]  # positions are in this batch's own coordinates
    batch: Batch  # every row's step tokens, right-padded (positions and token counts read it)
    groups: list[Group]
    current: Group | None = None  # the group whose forward is running (replay reads its rows)

    def subject_positions(self) -> torch.Tensor:
        return torch.tensor([self.batch.position(i, r.subject_index) for i, r in enumerate(self.rows)])

    def request_index(self) -> torch.Tensor:
        return torch.tensor([r.request for r in self.rows])

    def select(self, keep: list[int]) -> "StepBatch":
        """Rows ``keep`` only. Caches are narrowed in place (finished rows never return)."""
        idx = torch.tensor(keep, dtype=torch.long)
        b = self.batch
        sub = Batch(b.input_ids[idx], b.attention_mask[idx], [b.lengths[i] for i in keep], b.padding_side)
        new_index = {old: new for new, old in enumerate(keep)}
        groups = []
        for g in self.groups:
            old = g.rows.tolist()
            local = [j for j, r in enumerate(old) if r in new_index]
            if not local:
                continue
            dev = g.input_ids.device
            rows = torch.tensor([new_index[old[j]] for j in local], device=dev)
            groups.append(g.narrowed(torch.tensor(local, device=dev), rows))
        return StepBatch([self.rows[i] for i in keep], sub, groups)

    def final_hidden(self, model, each: Callable[[Group], object] | None = None) -> torch.Tensor:
        """Last hidden states (after the final norm) of every row, ``[rows, width, d]``; a
        slot past a row's end is zero. ``each(group)`` is called after each group's pass
        (to collect what hooks captured)."""
        parts = []
        for g in self.groups:
            self.current = g
            try:
                parts.append(model.base_model(**g.forward_kwargs()).last_hidden_state)
            finally:
                self.current = None
            if each is not None:
                each(g)
        return self.assemble(parts)

    def assemble(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """Per-group ``[g, width_g, ...]`` tensors back into ``[rows, width, ...]`` row order."""
        if len(parts) == 1 and self.groups[0].width == self.batch.input_ids.shape[1] \
                and len(self.groups[0].rows) == len(self.rows):
            order = self.groups[0].rows
            if torch.equal(order, torch.arange(len(order), device=order.device)):
                return parts[0]
        first = parts[0]
        out = first.new_zeros((len(self.rows), self.batch.input_ids.shape[1], *first.shape[2:]))
        for g, part in zip(self.groups, parts):
            out[g.rows, : part.shape[1]] = part
        return out

    def rows_of_current(self, full: torch.Tensor) -> torch.Tensor:
        """The running group's slice of a ``[rows, width, ...]`` tensor."""
        g = self.current
        return full if g is None else full[g.rows, : g.width]

    def after_step(self) -> None:
        """Drop the keys/values the step appended, keeping only the prefixes."""
        for g in self.groups:
            g.restore_cache()

    @property
    def padded_tokens(self) -> int:
        """Token slots the step's forwards run (real tokens plus padding)."""
        return sum(g.input_ids.numel() for g in self.groups)


def full_layout(rb: RowBatch, device) -> StepBatch:
    b = rb.batch.to(device)
    group = Group(torch.arange(len(rb.rows), device=device), b.input_ids, b.attention_mask, None, None)
    return StepBatch(list(rb.rows), b, [group])


def suffix_groups(lengths: list[int], overhead: int = GROUP_OVERHEAD_TOKENS) -> list[list[int]]:
    """Row indices split into groups of similar length: the split of the sorted distinct
    lengths that minimizes the padded tokens run plus ``overhead`` per group (exact by
    dynamic programming; there are only a handful of distinct lengths)."""
    distinct = sorted(set(lengths))
    count = {n: lengths.count(n) for n in distinct}
    best = [0.0] + [float("inf")] * len(distinct)  # best[j]: cost of the first j lengths
    cut = [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        for i in range(j):
            rows = sum(count[n] for n in distinct[i:j])
            cost = best[i] + rows * distinct[j - 1] + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    spans, j = [], len(distinct)
    while j > 0:
        spans.append(set(distinct[cut[j]:j]))
        j = cut[j]
    return [[i for i, n in enumerate(lengths) if n in span] for span in reversed(spans)]


@torch.no_grad()
def prefix_cached_layout(model, tok, rb: RowBatch, device, overhead: int = GROUP_OVERHEAD_TOKENS) -> StepBatch:
    """Run every row's tokens before its edited token once; return the suffixes, in
    groups of similar length."""
    rows = rb.rows
    splits = [r.subject_index for r in rows]
    ends = [max([r.subject_index, *r.target_positions]) + 1 for r in rows]
    if max(splits) == 0:
        return full_layout(rb, device)
    if not supports_prefix_cache(model):
        return full_layout(rb, device)  # sliding-window layers evict entries: keep it simple
    new_rows = [
        replace(r, ids=r.ids[s:e], subject_index=0, target_positions=[p - s for p in r.target_positions])
        for r, s, e in zip(rows, splits, ends)
    ]
    suffix = make_batch(tok, [r.ids for r in new_rows], "right")
    shared = _SharedPrefixes(model, tok, rows, splits, device)
    groups = [_prefix_group(model, tok, rows, splits, suffix, members, shared, device)
              for members in suffix_groups(suffix.lengths, overhead)]
    return StepBatch(new_rows, suffix.to(device), groups)


class _SharedPrefixes:
    """The context template's tokens open every rewriting row of that template, identical
    for every request: they run once per template (not once per row), and each row's own
    prefix tokens (the subject's) continue from them."""

    MIN_SHARED = 2  # fewer common tokens are not worth a separate pass

    def __init__(self, model, tok, rows: list[Row], splits: list[int], device):
        from transformers import DynamicCache

        by_template: dict[tuple, list[int]] = {}
        for i, r in enumerate(rows):
            by_template.setdefault((r.kind, r.template), []).append(i)
        self.cluster = [0] * len(rows)  # 0: the empty cluster (nothing shared)
        self.length = [0] * len(rows)
        seqs: list[list[int]] = [[pad_id(tok)]]
        for members in by_template.values():
            common = _common_prefix([rows[i].ids[: splits[i]] for i in members])
            if len(common) < self.MIN_SHARED:
                continue
            seqs.append(common)
            for i in members:
                self.cluster[i], self.length[i] = len(seqs) - 1, len(common)
        batch = make_batch(tok, seqs, "left")
        self.mask = batch.attention_mask.clone()
        self.mask[0] = 0
        self.kv: list[tuple[torch.Tensor, torch.Tensor]] = []
        if len(seqs) == 1:
            return
        cache = DynamicCache(config=model.config)
        pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        model(input_ids=batch.input_ids.to(device), attention_mask=self.mask.to(device),
              position_ids=pos.to(device), past_key_values=cache, use_cache=True)
        self.kv = [(layer.keys, layer.values) for layer in cache.layers]

    def cache_for(self, model, members: list[int], device):
        """A cache holding the shared tokens of ``members`` (left-padded), and its mask."""
        from transformers import DynamicCache

        cache = DynamicCache(config=model.config)
        idx = torch.tensor([self.cluster[i] for i in members], dtype=torch.long)
        if self.kv:
            dev_idx = idx.to(device)
            for layer, (k, v) in zip(cache.layers, self.kv):
                layer.lazy_initialization(k, v)
                layer.keys, layer.values = k[dev_idx], v[dev_idx]
        return cache, self.mask[idx] if self.kv else self.mask[idx][:, :0]


def _common_prefix(seqs: list[list[int]]) -> list[int]:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for j in range(n):
        if any(s[j] != first[j] for s in seqs):
            return first[:j]
    return first[:n]


def _prefix_group(model, tok, rows: list[Row], splits: list[int], suffix: Batch, members: list[int],
                  shared: _SharedPrefixes, device) -> Group:
    """One group: its rows' prefixes run into its own cache (after the shared template
    tokens), left-padded to the group's own width."""
    cache, smask = shared.cache_for(model, members, device)
    starts = [shared.length[i] for i in members]
    # an empty remainder is one masked pad, so the cache is rectangular
    rest = make_batch(tok, [rows[i].ids[s: splits[i]] or [pad_id(tok)] for i, s in zip(members, starts)], "left")
    rmask = rest.attention_mask.clone()
    for j, (i, s) in enumerate(zip(members, starts)):
        if splits[i] == s:
            rmask[j] = 0
    pmask = torch.cat([smask, rmask], dim=1)
    if rmask.any() or not shared.kv:
        rpos = torch.tensor(starts)[:, None] + (rmask.cumsum(-1) - 1).clamp(min=0)
        model(input_ids=rest.input_ids.to(device), attention_mask=pmask.to(device), position_ids=rpos.to(device),
              past_key_values=cache, use_cache=True)
    else:  # nothing of their own before the edited token: the shared part is the whole prefix
        pmask = smask
    idx = torch.tensor(members, dtype=torch.long)
    width = max(suffix.lengths[i] for i in members)
    mask = torch.cat([pmask, suffix.attention_mask[idx, :width]], dim=1).to(device)
    positions = (pmask.sum(-1, keepdim=True) + torch.arange(width)[None, :]).to(device)
    prefix_kv = [(layer.keys, layer.values) for layer in cache.layers]
    return Group(idx.to(device), suffix.input_ids[idx, :width].to(device), mask, positions, cache, prefix_kv)
