"""MEMIT (docs/methods/memit.md): Δ = R Kᵀ (λ·C0 + [K_p K_pᵀ] + K Kᵀ + α I)⁻¹ per layer.

With ``preserve_previous`` (default) the keys of all earlier batches enter the solve
(the paper's "improved" MEMIT-seq baseline); off, it is plain MEMIT (Table 6).
"""

from __future__ import annotations

import torch

from ..engine import LTEEditor
from ...settings.hparams import LTEHParams
from ..solvers import memit_delta
from ...plugins import register_method


class MEMITHParams(LTEHParams):
    method: str = "memit"


@register_method
class MEMITEditor(LTEEditor):
    name = "memit"
    hparams_cls = MEMITHParams

    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return memit_delta(R, K, self.c0_for(layer, K.device), self.hp.lam(layer), Cp=self.cp_for(layer, K.device),
                           alpha=self.hp.L2, layer=layer)
