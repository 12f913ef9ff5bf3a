"""AdaEdit (docs/methods/adaedit.md): a PMET-style target, a MEMIT-seq solve with α·I, and a
sparse, low-rank version of each layer update.

The paper's method section was not accessible and no official code was found: everything
here follows the only implementation, FE (jugechengzi/FE) ``algs/adaedit`` (checked
against FE's code only; the paper is unverified):

- target: PMET's two sites (δ_attn, δ_mlp) at l_m, joint Adam, weight decay on both, δ_mlp
  clamped against the **block-output** norm (``mlp_clamp_reference: block``), no adaptive
  NLL (FE's PMET target has none); z = m0 + δ_mlp;
- residual: MLP output at l_m on the bare prompt, spread **linearly** (``residual_spread``),
  R_i = (Z − H_cur)/(m − i);
- solve: Δ = R Kᵀ (K Kᵀ + K_p K_pᵀ + λ C0 + α I)⁻¹ with α = ``L2`` (0 by default);
  ``use_covariance: false`` drops λ·C0 (FE ``adaedit_nok0``, which uses α = 10);
- post-processing ``adaedit_sparsify`` (``postprocess``), in the solver's [d_ff, d]
  orientation as in FE: thin SVD Δ = U S Vᵀ; keep the top r = ⌊ρ_r·min(d, d_ff)⌋ triplets;
  in each kept left vector (column of U_r, length d_ff) keep the ⌊ρ_k·d_ff⌋ largest |entries|,
  in each kept right vector (row of V_rᵀ, length d) the ⌊ρ_k·d⌋ largest; rescale the
  sparse U (as a whole) to ‖U_r‖_F and likewise V; Δ' = U' S_r V'ᵀ.

Defaults: ρ_r = ``adaedit_topr`` = 0.6, ρ_k = ``adaedit_topk`` = 0.6 (FE). With a batch of
n < r edits the update has rank ≤ n, so the truncation keeps it whole and only the
sparsification acts. K_p K_pᵀ: the engine's post-edit keys (AE-repo), where FE adds the
keys computed during insertion. (short names of source repositories: docs/glossary.md.)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator

from .pmet import PMETEditor, PMETHParams
from ...plugins import register_method


class AdaEditHParams(PMETHParams):
    method: str = "adaedit"
    adaptive_nll: bool = False
    mlp_clamp_reference: Literal["mlp", "block"] = "block"
    residual_spread: Literal["sqrt", "linear"] = "linear"
    adaedit_topr: float = Field(0.6, gt=0.0, le=1.0)
    adaedit_topk: float = Field(0.6, gt=0.0, le=1.0)
    use_covariance: bool = True

    @model_validator(mode="after")
    def _regular_without_c0(self):
        if not self.use_covariance and self.L2 <= 0:
            raise ValueError("use_covariance: false needs L2 > 0 to keep the solve regular (FE adaedit_nok0: 10)")
        return self


def _topk_abs_keep(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    keep = torch.zeros_like(x, dtype=torch.bool)
    keep.scatter_(dim, torch.topk(x.abs(), k, dim=dim).indices, True)
    return x * keep


def adaedit_factors(delta_out_in: torch.Tensor, topr: float, topk: float
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sparse factors (U' [d_ff, r], S_r [r], V'ᵀ [r, d]) of an update given in [d, d_ff]."""
    work = delta_out_in.T.double()  # FE's orientation: [d_ff, d]
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    r = max(1, int(len(S) * topr))
    Ur, Sr, Vr = U[:, :r], S[:r], Vh[:r]
    ku = max(1, int(Ur.shape[0] * topk))
    kv = max(1, int(Vr.shape[1] * topk))
    Us = _topk_abs_keep(Ur, ku, dim=0)
    Vs = _topk_abs_keep(Vr, kv, dim=1)
    # Keep each factor's overall size: sparsifying alone would shrink the update.
    Us = Us * (Ur.norm() / Us.norm())
    Vs = Vs * (Vr.norm() / Vs.norm())
    return Us, Sr, Vs


def adaedit_sparsify(delta_out_in: torch.Tensor, topr: float = 0.6, topk: float = 0.6) -> torch.Tensor:
    """AdaEdit's post-processed update, back in [d, d_ff] orientation."""
    Us, Sr, Vs = adaedit_factors(delta_out_in, topr, topk)
    return ((Us * Sr) @ Vs).T.to(delta_out_in.dtype)


@register_method
class AdaEditEditor(PMETEditor):
    name = "adaedit"
    hparams_cls = AdaEditHParams

    @classmethod
    def covariance_needed(cls, hparams) -> bool:
        return bool(hparams.use_covariance)  # MEMIT's solve then runs without λ·C0

    @property
    def needs_covariance(self) -> bool:  # type: ignore[override]
        return self.covariance_needed(self.hp)

    def postprocess(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        return adaedit_sparsify(delta, self.hp.adaedit_topr, self.hp.adaedit_topk)
