"""ROME (docs/methods/rome.md): one layer, one request at a time, a rank-one update
Δ = (v* − m)(C⁻¹k̄)ᵀ / (kᵀ C⁻¹ k̄).

The free vector is added to the MLP output (norms for clamp and weight decay are the MLP
output's); keys are a flat mean over 21 templates. ``consistent_key`` (R-ROME) uses the
template-averaged key and value in the denominator and residual too, instead of the
bare prompt's — the official code mixes the two, which is known to collapse models.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ....data.records import EditRequest
from ..engine import LTEEditor, SolveError
from ...settings.hparams import LTEHParams
from ..keys import bare_rows, read_at_subject, template_mean
from ..solvers import rome_delta
from ..targets import TargetResult
from ...plugins import register_method


class ROMEHParams(LTEHParams):
    forward_replay_refusal: ClassVar[str | None] = "ROME edits one layer, so there are no later layers to replay to"
    method: str = "rome"
    template_groups: list[tuple[int, int]] = [(5, 10), (10, 10)]
    template_flat: bool = True
    mom2_adjustment: bool = True
    consistent_key: bool = False
    preserve_previous: bool = False


@register_method
class ROMEEditor(LTEEditor):
    name = "rome"
    hparams_cls = ROMEHParams
    site_kind = "mlp"
    uses_preserved_keys = False  # a rank-one update per request: no solve keeps earlier keys
    per_request = True  # sequential by design: each edit sees the previous ones
    single_layer = True

    @classmethod
    def covariance_needed(cls, hparams) -> bool:
        return bool(hparams.mom2_adjustment)

    @property
    def needs_covariance(self) -> bool:  # type: ignore[override]
        return self.covariance_needed(self.hp)

    def validate(self, requests: list[EditRequest]) -> None:
        super().validate(requests)
        if len(self.layers) != 1:
            raise SolveError(f"rome edits exactly one layer, got {self.layers}")

    def layer_update(self, requests: list[EditRequest], targets: TargetResult, i: int, layer: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The rank-one update for the one request (per-request mode) and its residual v* − m."""
        (req,) = requests
        templates = self.templates()
        ins, outs, rows = read_at_subject(self.model, self.tok, self.adapter, [req], templates.all,
                                          [layer], {"mlp_out": layer}, locate=self.hp.locate)
        k_mean = template_mean(ins[layer], rows, 1, templates)[:, 0]
        if self.hp.consistent_key:
            k_plain, m_plain = k_mean, template_mean(outs["mlp_out"], rows, 1, templates)[:, 0]
        else:
            k_plain, m_plain = bare_rows(ins[layer], rows)[:, 0], bare_rows(outs["mlp_out"], rows)[:, 0]
        z = targets.z["mlp"][0]
        delta = rome_delta(k_mean, k_plain, z, m_plain, C=self.c0_for(layer, k_mean.device), layer=layer)
        return delta, (z - m_plain)[:, None]
