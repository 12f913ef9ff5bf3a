"""NAMET (docs/methods/namet.md): MEMIT whose targets are optimized on **left-padded** prompts —
the paper's "one-line modification" that adds noise to memory extraction. Target steps run
the full padded rows (``prefix_cache`` off), with the model's default position ids, as the
reference passes only ``input_ids`` and ``attention_mask``.

``padding`` selects how indices are handled under left padding:

- ``official`` (default; NAMET-repo ``namet/compute_z.py``, ``namet_main.py``): the NLL
  targets are right-aligned (correct), but the subject index of every prompt is the one
  for the *unpadded* text, not shifted by its pad count, so in each prompt shorter than the
  longest, δ is added at (and h0 read from) a token displaced to the left — possibly a pad.
  One δ, one h0 **per prompt**: weight decay w·‖δ·1ᵀ‖_F/‖H0‖_F and clamp
  c·‖H0‖_F (Frobenius over the request's P+1 prompts, not squared), z_j = h0_j + δ.
  The residual at each layer is the mean over the *prefixed* rewriting prompts (the bare
  prompt and the KL prompt dropped) of z_j − h_j, with h_j the current block output at the
  correct subject index of prompt j (without the target), spread linearly.
- ``aligned`` (FE ``algs/namet``): pad-aware subject indices, and otherwise MEMIT's target
  (one h0, one z) and residual. With rotary position embeddings (RoPE) and correct masks
  this is close to MEMIT [U].

Not reproduced: the official code also sets ``tok.add_bos_token = False`` (non-Gemma) and
reads keys and H_cur under left padding; here both use the engine's right-padded reads,
which differ only through position ids. The official early stop is loss < 1e-2 and λ is a
per-layer list (``mom2_update_weight``). Templates: 12 seed words, top-k 100 at temperature
0.5 (NAMET-repo ``get_context_templates``). (short names of source repositories: docs/glossary.md.)
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Literal

import torch

from ....data.records import EditRequest
from ..context import TemplateSpec
from ..keys import read_at_subject, template_mean
from ..objective import StepContext, per_request_sums
from ...prompts import RowBatch
from ..targets import TargetOptimizer, TargetResult, TargetSettings
from .memit import MEMITEditor, MEMITHParams
from ...plugins import register_method

_OWN_KINDS = ("rewrite", "kl")  # NAMET's own P+1 prompts per request

NAMET_SEED_WORDS = ["The", "Therefore", "Because", "I", "You", "However", "Also", "Nevertheless", "He", "It",
                    "Can", "Because"]


class NAMETHParams(MEMITHParams):
    method: str = "namet"
    padding: Literal["official", "aligned"] = "official"
    early_stop_loss: float = 1e-2
    template_groups: list[tuple[int, int]] = [(10, 12)]
    template_seed_words: list[str] = NAMET_SEED_WORDS
    template_top_k: int = 100
    template_temperature: float = 0.5


@dataclass
class NAMETTargets(TargetResult):
    """TargetResult plus the official per-prompt targets z_j = h0_j + δ."""

    row_z: torch.Tensor | None = None  # [rows, d]
    row_keys: list[tuple[int, int, str]] | None = None  # (request, template, kind) per row


class NAMETTargetOptimizer(TargetOptimizer):
    def __init__(self, model, tok, adapter, settings: TargetSettings, official: bool = True, loss_terms=()):
        if settings.padding_side != "left" or settings.prefix_cache:
            raise ValueError("NAMET optimizes on full left-padded rows: padding_side='left', prefix_cache=False")
        super().__init__(model, tok, adapter, settings, loss_terms)
        self.official = official

    def build_rows(self, requests: list[EditRequest], templates: list[str]) -> RowBatch:
        rb = super().build_rows(requests, templates)
        if not self.official:
            return rb
        # The official code pads each request's P+1 prompts on their own and indexes them
        # with the unpadded subject index, i.e. shifted left by the row's pad count within
        # that request. Pad-aware code adds this batch's pad count to an index, so subtract
        # the request's own pad count: the position lands on the token the official one does.
        # Rows a loss term adds (negation-aware "opposite" rows) form their own padded group.
        width = {}
        for r in rb.rows:
            group = (r.request, r.kind in _OWN_KINDS)
            width[group] = max(width.get(group, 0), len(r.ids))
        rows = [replace(r, subject_index=r.subject_index - (width[(r.request, r.kind in _OWN_KINDS)] - len(r.ids)))
                for r in rb.rows]
        return RowBatch(rows, rb.batch)

    def prepare(self, layout, hidden0, ctx: StepContext) -> None:
        self._ctx = ctx

    def norms(self, site, ctx: StepContext):
        if not self.official:
            return super().norms(site, ctx)
        # ‖H0‖_F over the request's own P+1 prompts (not rows a loss term adds)
        own = torch.tensor([i for i, r in enumerate(ctx.rows) if r.kind in _OWN_KINDS])
        req = ctx.layout.request_index()[own]
        sq, count = per_request_sums(ctx.row_values[site.kind][own.to(self.device)].pow(2).sum(-1), req,
                                     ctx.n_requests)
        fro = sq.sqrt()  # ‖H0‖_F over the request's prompts
        # w·‖δ·1ᵀ‖_F/‖H0‖_F = w·‖δ‖/(‖H0‖_F/√P'): the engine's form with this divisor
        return fro, fro / count.sqrt()

    def run(self, requests: list[EditRequest], templates: list[str]) -> TargetResult:
        result = super().run(requests, templates)
        out = NAMETTargets(**{f.name: getattr(result, f.name) for f in fields(TargetResult)})
        if self.official:
            kind = self.s.sites[0].kind
            delta = result.z[kind] - result.anchor[kind]
            req = self._ctx.layout.request_index().to(delta.device)
            out.row_z = self._ctx.row_values[kind] + delta[req]
            out.row_keys = [(r.request, r.template, r.kind) for r in self._ctx.rows]
        return out


@register_method
class NAMETEditor(MEMITEditor):
    name = "namet"
    hparams_cls = NAMETHParams

    def template_spec(self) -> TemplateSpec:
        hp = self.hp
        return TemplateSpec(groups=tuple(tuple(g) for g in hp.template_groups), flat=hp.template_flat,
                            seed_words=tuple(hp.template_seed_words), top_k=hp.template_top_k,
                            temperature=hp.template_temperature)

    def target_settings(self) -> TargetSettings:
        settings = super().target_settings()
        settings.padding_side, settings.prefix_cache = "left", False
        return settings

    def target_optimizer(self) -> TargetOptimizer:
        return NAMETTargetOptimizer(self.model, self.tok, self.adapter, self.target_settings(),
                                    official=self.hp.padding == "official", loss_terms=self.loss_terms())

    def layer_inputs(self, requests, targets, i, layer):
        # forward replay reads the bare prompt's residual at each layer, as FE's NAMET does
        if self.hp.padding != "official" or self.hp.targets == "forward-replay":
            return super().layer_inputs(requests, targets, i, layer)
        assert isinstance(targets, NAMETTargets) and targets.row_z is not None
        templates = self.templates()
        ins, outs, rows = read_at_subject(self.model, self.tok, self.adapter, requests, templates.all, [layer],
                                          {"block": self.critical_layer}, locate=self.hp.locate)
        keys = template_mean(ins[layer], rows, len(requests), templates)
        self._insert_keys[layer] = keys
        z_of = {(r, t): targets.row_z[j] for j, (r, t, kind) in enumerate(targets.row_keys) if kind == "rewrite"}
        # the prefixed prompts only; a run with no prefixes falls back to the bare prompt
        use = [t for t in range(len(templates.all)) if t > 0] or [0]
        h_cur = outs["block"]
        residual = torch.zeros(h_cur.shape[1], len(requests), device=h_cur.device)
        for j, row in enumerate(rows):
            if row.template in use:
                residual[:, row.request] += (z_of[(row.request, row.template)].to(h_cur.device) - h_cur[j]) / len(use)
        return keys, residual / (len(self.layers) - i)
