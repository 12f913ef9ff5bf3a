"""RECT (docs/methods/rect.md): MEMIT whose per-layer update keeps only its entries with the
largest change and zeroes the rest, to limit damage to general abilities.

Per layer, per batch (``postprocess``), with W the weight Δ is about to be added to:

- score ``relative`` (default): |Δ_ij| / (|W_ij| + 1e-8), the official RECT score
  (RECT-repo ``rome_main.py``, and AE-repo/ENC ``memit_rect_main.py``); ``absolute``:
  |Δ_ij| (FE ``rect_norm``);
- keep the top ``rect_keep`` fraction of entries (exactly round(ρ·N) of the N entries;
  ties broken by ``torch.topk``), zero the others.

Default ρ = 0.2: the official RECT code zeroes the 80% smallest relative changes. The
other sources differ (AE-repo/ENC keep 40% relative; FE keeps 60% absolute,
``zero_prob: 0.4``): set ``rect_keep``/``rect_score`` for parity with them. The paper's
value was not read [U].

(short names of source repositories: docs/glossary.md.)

``rect_mode`` says when the mask applies:

- ``in_loop`` (default): each layer's update is masked before it is written, so later
  layers see the masked update of earlier ones (the residual is recomputed per layer) and
  the spreading compensates for part of what the mask removes;
- ``reference``: the AE-repo/ENC ``memit_rect_main.py`` order. The whole MEMIT update is
  spread and written unmasked (later layers see the full update of earlier ones), then each
  layer's update of the batch is masked against the weight it was added to. Nothing
  compensates for what the mask removes. The paper profile uses this mode with ρ = 0.4.
  The keys the solves read above the first layer were read below the *unmasked* updates, a
  model that never exists, so K_p takes the batch's keys from one more key pass on the
  masked (edited) model (``solve_keys_are_final``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from .memit import MEMITEditor, MEMITHParams
from ...plugins import register_method


class RECTHParams(MEMITHParams):
    method: str = "rect"
    rect_score: Literal["relative", "absolute"] = "relative"
    rect_keep: float = Field(0.2, gt=0.0, le=1.0)
    rect_mode: Literal["in_loop", "reference"] = "in_loop"


def rect_scores(delta: torch.Tensor, weight: torch.Tensor, score: str) -> torch.Tensor:
    """The per-entry change score RECT ranks by (same shape as ``delta``)."""
    if score == "relative":
        return delta.abs() / (weight.abs() + 1e-8)  # AE-repo's epsilon: a zero weight still ranks
    if score == "absolute":
        return delta.abs()
    raise ValueError(f"rect_score must be 'relative' or 'absolute', not {score!r}")


def rect_keep_count(n_entries: int, keep: float) -> int:
    return max(1, min(n_entries, round(keep * n_entries)))


def rect_mask(delta: torch.Tensor, weight: torch.Tensor, keep: float, score: str = "relative") -> torch.Tensor:
    """Boolean mask of the round(keep·N) entries with the largest score."""
    if delta.shape != weight.shape:
        raise ValueError(f"update {tuple(delta.shape)} and weight {tuple(weight.shape)} differ in shape")
    scores = rect_scores(delta.float(), weight.float(), score).flatten()
    k = rect_keep_count(scores.numel(), keep)
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[torch.topk(scores, k, sorted=False).indices] = True
    return mask.view_as(delta)


@register_method
class RECTEditor(MEMITEditor):
    name = "rect"
    hparams_cls = RECTHParams

    @property
    def solve_keys_are_final(self) -> bool:
        # reference mode masks every layer after all of them read their keys
        return self.hp.rect_mode == "in_loop"

    def current_weight(self, layer: int) -> torch.Tensor:
        """W in [d, d_ff] orientation, fp32: the master copy (original + accumulated) when this
        layer was edited before, so a bf16 model's rounding does not change the ranking."""
        weight = self.adapter.edit_weight(self.model, layer)
        return self.adapter.to_out_in(self.master_weight(layer)).to(weight.device)

    def insert(self, requests, targets):
        if self.hp.rect_mode == "in_loop":
            return super().insert(requests, targets)
        # reference: write the full spread update, then keep the top fraction of each layer's
        # update, ranked against the weight as it was before this batch
        before = {layer: self.current_weight(layer).clone() for layer in self.layers}  # not a view of W
        self._unmasked: dict[int, torch.Tensor] = {}
        reports = super().insert(requests, targets)
        for i, layer in enumerate(self.layers):
            delta = self._unmasked.pop(layer)
            masked = delta * rect_mask(delta, before[layer].to(delta.device), self.hp.rect_keep, self.hp.rect_score)
            self.write(layer, masked - delta)
            reports[i] = reports[i].model_copy(update={"update_norm": float(masked.norm())})
        return reports

    def postprocess(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        if self.hp.rect_mode == "reference":
            self._unmasked[layer] = delta
            return delta
        weight = self.current_weight(layer).to(delta.device)
        return delta * rect_mask(delta, weight, self.hp.rect_keep, self.hp.rect_score)
