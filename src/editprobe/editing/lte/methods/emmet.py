"""EMMET (docs/methods/emmet.md): the equality-constrained mass edit
Δ = R (Kᵀ C̃⁻¹ K + μ I)⁻¹ Kᵀ C̃⁻¹ with C̃ = λ·C0 [+ K_p K_pᵀ]; μ (``emmet_lambda``) only
regularizes batches of more than one edit, as in the official code."""

from __future__ import annotations

import torch

from ..engine import LTEEditor
from ...settings.hparams import LTEHParams
from ..solvers import emmet_delta
from ...plugins import register_method


class EMMETHParams(LTEHParams):
    method: str = "emmet"
    emmet_lambda: float = 0.1
    update_norm_lambda: float = 0.0


@register_method
class EMMETEditor(LTEEditor):
    name = "emmet"
    hparams_cls = EMMETHParams

    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return emmet_delta(R, K, self.c0_for(layer, K.device), self.hp.lam(layer), Cp=self.cp_for(layer, K.device),
                           mu=self.hp.emmet_lambda, nu=self.hp.update_norm_lambda, layer=layer)
