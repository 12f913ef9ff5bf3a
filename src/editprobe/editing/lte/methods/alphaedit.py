"""AlphaEdit (docs/methods/alphaedit.md): the MEMIT update projected onto the null space of the
preserved keys, Δ = R Kᵀ P (K Kᵀ P + K_p K_pᵀ P + α I)⁻¹, with P from an
eigendecomposition of C0 computed once on the unedited model. No λ·C0 term.

The official threshold is absolute (eigenvalue < 2e-2 of the per-token mean C0). On
small models it keeps most directions, so a relative or energy threshold is offered; the
null-space dimension and the key energy it holds are reported per layer.
"""

from __future__ import annotations

from typing import Literal

import torch

from ..engine import LTEEditor
from ...settings.hparams import LTEHParams
from ..solvers import NullSpaceInfo, alphaedit_delta
from ...plugins import register_method


class AlphaEditHParams(LTEHParams):
    method: str = "alphaedit"
    L2: float = 10.0
    nullspace_threshold: float = 2e-2
    nullspace_mode: Literal["absolute", "relative", "energy"] = "absolute"


@register_method
class AlphaEditEditor(LTEEditor):
    name = "alphaedit"
    hparams_cls = AlphaEditHParams
    solve_weight_field = "L2"  # the projected solve's ridge; C0 enters through the projector, not λ

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._projectors: dict[int, torch.Tensor] = {}
        self.nullspace: dict[int, NullSpaceInfo] = {}

    def projector(self, layer: int) -> torch.Tensor:
        """P for ``layer``: from this editor's state, else from the statistics source (the
        store caches it beside C0, keyed by threshold and mode; ``StatsSource.projector``)."""
        if layer not in self._projectors:
            P, info = self.stats_source.projector(layer, self.hp.nullspace_threshold, self.hp.nullspace_mode)
            self._projectors[layer], self.nullspace[layer] = P.float().cpu(), info
        return self._projectors[layer]

    def prepare(self) -> None:
        super().prepare()
        for layer in self.layers:
            self.projector(layer)

    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        return alphaedit_delta(R, K, self.projector(layer).to(K.device), Cp=self.cp_for(layer, K.device),
                               alpha=self.hp.L2, layer=layer)

    def _extra_state(self) -> dict[str, torch.Tensor]:
        out = {f"projector.{l}": p.contiguous() for l, p in self._projectors.items()}
        for l, info in self.nullspace.items():  # what the projector kept, reported per layer
            out[f"nullspace.{l}"] = torch.tensor([info.dim, info.energy_fraction, info.threshold], dtype=torch.float64)
        return out

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        self._projectors.update({int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("projector.")})
        for key, v in tensors.items():
            if key.startswith("nullspace."):
                dim, fraction, threshold = v.tolist()
                self.nullspace[int(key.split(".")[1])] = NullSpaceInfo(
                    dim=int(dim), energy_fraction=fraction, threshold=threshold, mode=self.hp.nullspace_mode)
