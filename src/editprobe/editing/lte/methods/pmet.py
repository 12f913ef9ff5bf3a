"""PMET (docs/methods/pmet.md): targets for the attention output and the MLP output at the
critical layer, optimized jointly; only the MLP output projection is written.

What differs from MEMIT:

- two free vectors at l_m (two ``Site``s): δ_attn on the attention output projection's
  output, δ_mlp on the MLP output. One Adam over both; weight decay
  w·(‖δ_mlp‖/‖m0‖² + ‖δ_attn‖/‖a0‖²); each δ clamped to ``clamp_norm_factor`` times its own
  initial value (PMET-repo). ``mlp_clamp_reference: block`` clamps δ_mlp against the block
  output's norm instead, as FE does (its comment: the MLP-output norm "can't train").
- the adaptive NLL weight (PMET-repo ``compute_zs``), per request: when every target token
  is already the argmax, the next step's NLL is weighted 0.1·``nll_loss_factor``, and the
  request stops if in addition kl_factor·KL ≤ 0.01; otherwise the weight returns to
  ``nll_loss_factor``. ``adaptive_nll: false`` turns it off (FE's PMET has none).
- the residual is measured on the MLP (down_proj) output at l_m on the bare prompt and
  spread with a square root: R_i = (Z_mlp − H_cur) / √(m − i) (PMET-repo).
  ``residual_spread: linear`` divides by (m − i) as MEMIT does, as FE's PMET did until
  2026-01-28 (the paper-code profile). z_attn is not used.
- the solve is MEMIT's (with ``preserve_previous`` the MEMIT-seq form, as FE; PMET-repo edits
  one batch, where the two coincide).

Attention weights are never written: the engine writes only ``mlp_out``; the tests check it.
(short names of source repositories: docs/glossary.md.)
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch

from ..objective import LossTerms, StepContext
from ..targets import Site, TargetOptimizer, TargetSettings
from .memit import MEMITEditor, MEMITHParams
from ...plugins import register_method


class PMETHParams(MEMITHParams):
    # AdaEdit inherits this: its targets are PMET's too.
    forward_replay_refusal: ClassVar[str | None] = ("its targets are MLP outputs (PMET's two sites), not residual-stream "
                                                    "states")
    method: str = "pmet"
    nll_loss_factor: float = 1.0
    adaptive_nll: bool = True
    mlp_clamp_reference: Literal["mlp", "block"] = "mlp"
    residual_spread: Literal["sqrt", "linear"] = "sqrt"


class PMETTargetOptimizer(TargetOptimizer):
    """The engine's optimizer plus PMET's adaptive NLL weight (one factor per request)."""

    adaptive = True
    top1_factor = 0.1  # PMET-repo: NLL weight while the target is already top-1
    stop_kl = 0.01  # PMET-repo: stop once top-1 and the (weighted) KL is this small

    def prepare(self, layout, hidden0, ctx: StepContext) -> None:
        self._weight = torch.ones(ctx.n_requests, device=self.device)

    def losses(self, rb, hidden, active, ctx: StepContext) -> LossTerms:
        terms = super().losses(rb, hidden, active, ctx)
        if not self.adaptive:
            return terms
        terms.nll_weight = self._weight[active].clone()
        top1 = terms.top1
        terms.stop = top1 & (self.s.kl_factor * terms.kl.detach() <= self.stop_kl)
        # Takes effect on the request's next step, as in the reference loop.
        self._weight[active] = torch.where(top1, torch.full_like(top1, self.top1_factor, dtype=torch.float),
                                           torch.ones_like(top1, dtype=torch.float))
        return terms


@register_method
class PMETEditor(MEMITEditor):
    name = "pmet"
    hparams_cls = PMETHParams
    site_kind = "mlp"
    residual_kind = "mlp"

    @property
    def spread_power(self) -> float:  # type: ignore[override]
        return 0.5 if self.hp.residual_spread == "sqrt" else 1.0

    def target_settings(self) -> TargetSettings:
        settings = super().target_settings()
        hp = self.hp
        clamp_to = "block" if hp.mlp_clamp_reference == "block" else None
        settings.sites = (Site("attn_out", hp.clamp_norm_factor, hp.v_weight_decay),
                          Site("mlp", hp.clamp_norm_factor, hp.v_weight_decay, clamp_to=clamp_to))
        settings.nll_factor = hp.nll_loss_factor
        return settings

    def target_optimizer(self) -> TargetOptimizer:
        opt = PMETTargetOptimizer(self.model, self.tok, self.adapter, self.target_settings(), self.loss_terms())
        opt.adaptive = self.hp.adaptive_nll
        return opt

