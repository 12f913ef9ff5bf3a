"""MEMIT-LTI ("Learn to Inference", docs/methods/memit-lti.md): MEMIT whose target optimization
makes the edited model, which sees no context, match a teacher — the same model before this
batch reading the new fact in context — at a middle layer and at the output.

Only the target objective differs from MEMIT (keys, spreading and solve are MEMIT's):

- teacher prefix: ``ctx = "Imagine that " + p.format(s) + o + "\\n"``, put before every
  rewriting prompt (context template included); the KL prompt "{s} is a" is not prefixed;
- teacher pass (no gradient, once per batch): next-token log-probs at every target position
  of every prefixed rewriting prompt and at the KL prompt's last token; and the logit lens
  log_softmax(head(final_norm(h_mid))) of block ``lti_midlayer``'s output at the subject's
  last token of every prompt (``constr_pos = subject``, the only option implemented);
- student loss per request: nll_factor·NLL + last_kl·KL(P_δ ‖ P_teacher) (mean over target
  positions and the KL prompt's last token) + mid_kl·KL(lens_δ ‖ lens_teacher) (mean over
  prompts) + MEMIT's weight decay. MEMIT's own KL term is off (``kl_factor: 0``) as in ENC/FE.
  The two KLs are loss terms (``TeacherOutputKL``, ``TeacherLensKL``) sharing one teacher pass.

The teacher rows are built and tokenized on their own: the subject index of a prefixed row
points at the subject's last token in the *prompt* part (after the prefix, which also
contains the subject), and its target window comes from that row. The reimplementations
read (ENC, FE) reuse the unprefixed rows' indices for the prefixed batch, which with right
padding points at the wrong tokens; we do not reproduce that [U: unknown whether the
official EVOKE code has it]. Defaults are ENC's Llama-3-8B factors (nll 0.125, last-KL
0.0725, mid-KL 0.0425); FE uses nll 1 and last-KL 0.0625. (short names of source repositories: docs/glossary.md.)
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from typing import Literal

import torch
from pydantic import Field

from ....data.records import EditRequest
from ....models.hooks import capture, first_tensor
from ....models.resume_forward import final_hidden, logits_at
from ....models.tokens import join_target
from ...settings.hparams import HParamsError
from ..objective import BaseLossTerm, LossTerm, StepContext, local_index, per_request_mean
from ...prompts import RowBatch, batch_rows, rewrite_rows
from ..targets import TargetOptimizer, TargetSettings
from .memit import MEMITEditor, MEMITHParams
from ...plugins import register_method


class LTIHParams(MEMITHParams):
    method: str = "memit_lti"
    kl_factor: float = 0.0
    lti_midlayer: int
    lti_constr_pos: Literal["subject"] = "subject"
    lti_prefix: str = "Imagine that "
    lti_nll_factor: float = Field(0.125, ge=0.0)
    lti_last_kl_factor: float = Field(0.0725, ge=0.0)
    lti_mid_kl_factor: float = Field(0.0425, ge=0.0)


def teacher_prefix(req: EditRequest, lead: str = "Imagine that ") -> str:
    """The in-context statement of the new fact. Braces become spaces: the prefix is glued in
    front of a template, where a brace would read as a placeholder."""
    text = lead + join_target(req.query, req.target) + "\n"
    return text.replace("{", " ").replace("}", " ")


def teacher_rows(tok, requests: list[EditRequest], templates: list[str], kl_prompt: str | None, lead: str,
                 locate: str = "subject"):
    """Per request: every template-prefixed rewriting row behind the teacher prefix (own subject
    index and target window), then the unprefixed KL row."""
    rows = []
    for r, req in enumerate(requests):
        ctx = teacher_prefix(req, lead)
        for row in rewrite_rows(tok, [req], [ctx + t for t in templates], None, locate):
            row.request = r
            rows.append(row)
        for row in rewrite_rows(tok, [req], [], kl_prompt, locate):
            row.request = r
            rows.append(row)
    return rows


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per row from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(-1)


_OWN_KINDS = ("rewrite", "kl")  # the rows the teacher mirrors; rows a loss term adds are not its business


def _key(row) -> tuple:
    return (row.request, row.kind, row.template)


class LTITeacher:
    """The teacher pass (no gradient, once per batch) and the logit lens both KLs share."""

    def __init__(self, model, tok, adapter, midlayer: int, lead: str, kl_prompt: str | None, locate: str):
        self.model, self.tok, self.lead, self.kl_prompt, self.locate = model, tok, lead, kl_prompt, locate
        self.mid_path = adapter.path("block", midlayer)
        self._norm = adapter.module(model, "final_norm")
        self.out: dict[tuple, torch.Tensor] = {}
        self.mid: dict[tuple, torch.Tensor] = {}
        self._for: object | None = None  # the layout the values belong to

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits_at(self.model, self._norm(h)), -1)

    @torch.no_grad()
    def prepare(self, layout, ctx: StepContext) -> None:
        if self._for is layout:  # both terms ask; one pass
            return
        device = next(self.model.parameters()).device
        rows = teacher_rows(self.tok, ctx.requests, ctx.templates, self.kl_prompt, self.lead, self.locate)
        batch = batch_rows(self.tok, rows, "right").batch.to(device)
        with capture(self.model, [self.mid_path]) as got:
            hidden = final_hidden(self.model, batch)
        mid = got[self.mid_path]
        self.out, self.mid = {}, {}
        for i, row in enumerate(rows):
            pos = row.target_positions if row.kind == "rewrite" else [len(row.ids) - 1]
            at = torch.tensor([batch.position(i, p) for p in pos], device=device)
            self.out[_key(row)] = torch.log_softmax(logits_at(self.model, hidden[i, at]), -1)
            self.mid[_key(row)] = self.lens(mid[i, batch.position(i, row.subject_index)])
        for row in layout.rows:  # the student's rows must line up with the teacher's, label for label
            if row.kind in _OWN_KINDS and (_key(row) not in self.out
                                           or len(self.out[_key(row)]) != max(1, len(row.target_labels))):
                raise ValueError(f"memit_lti: teacher row {_key(row)} does not match the student's target window")
        self._for = layout


class TeacherOutputKL(BaseLossTerm):
    """Mean over a request's target positions and KL-prompt last token of KL(P_δ ‖ P_teacher)."""

    name = "last_kl"

    def __init__(self, teacher: LTITeacher, factor: float):
        self.teacher, self.factor = teacher, factor

    def prepare(self, layout, hidden0, ctx):
        self.teacher.prepare(layout, ctx)

    def __call__(self, rb, hidden, active, ctx):
        local = local_index(active)
        rows, pos, req, teacher = [], [], [], []
        for i, row in enumerate(rb.rows):
            if row.kind not in _OWN_KINDS:
                continue
            for p in row.target_positions:
                rows.append(i)
                pos.append(rb.batch.position(i, p))
                req.append(local[row.request])
            teacher.append(self.teacher.out[_key(row)])
        student = torch.log_softmax(logits_at(self.teacher.model, hidden[rows, pos]), -1)
        return per_request_mean(_kl(student, torch.cat(teacher)), torch.tensor(req), len(active))


class TeacherLensKL(BaseLossTerm):
    """Mean over a request's prompts of KL(lens_δ ‖ lens_teacher) at the mid layer's edited token."""

    name = "mid_kl"

    def __init__(self, teacher: LTITeacher, factor: float):
        self.teacher, self.factor = teacher, factor
        self._mid: list[torch.Tensor] | None = None

    def prepare(self, layout, hidden0, ctx):
        self.teacher.prepare(layout, ctx)

    @contextmanager
    def _keep_mid(self, model):
        self._mid = []

        def keep(module, args, output):  # the mid-layer output of each of this step's forwards, with grad
            self._mid.append(first_tensor(output))

        handle = model.get_submodule(self.teacher.mid_path).register_forward_hook(keep)
        try:
            yield
        finally:
            handle.remove()

    def forward_hooks(self, model):
        return [self._keep_mid(model)]

    def __call__(self, rb, hidden, active, ctx):
        local = local_index(active)
        rows, pos, req, teacher = [], [], [], []
        for i, row in enumerate(rb.rows):
            if row.kind not in _OWN_KINDS:
                continue
            rows.append(i)
            pos.append(rb.batch.position(i, row.subject_index))
            req.append(local[row.request])
            teacher.append(self.teacher.mid[_key(row)])
        mid = rb.assemble(self._mid)  # one part per row group the step ran
        lens = self.teacher.lens(mid[rows, pos])
        self._mid = None
        return per_request_mean(_kl(lens, torch.stack(teacher)), torch.tensor(req), len(active))


class LTITargetOptimizer(TargetOptimizer):
    """MEMIT's optimizer with the two teacher KLs as loss terms (after any others given)."""

    def __init__(self, model, tok, adapter, settings: TargetSettings, midlayer: int, lead: str,
                 last_kl: float, mid_kl: float, loss_terms: Sequence[LossTerm] = ()):
        self.teacher = LTITeacher(model, tok, adapter, midlayer, lead, settings.kl_prompt, settings.locate)
        own = [TeacherOutputKL(self.teacher, last_kl), TeacherLensKL(self.teacher, mid_kl)]
        super().__init__(model, tok, adapter, settings, [*own, *loss_terms])
        self.midlayer, self.lead, self.last_kl, self.mid_kl = midlayer, lead, last_kl, mid_kl

    @property
    def teacher_out(self) -> dict[tuple, torch.Tensor]:
        return self.teacher.out

    @property
    def teacher_mid(self) -> dict[tuple, torch.Tensor]:
        return self.teacher.mid

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        return self.teacher.lens(h)

    def build_rows(self, requests: list[EditRequest], templates: list[str]) -> RowBatch:
        rb = super().build_rows(requests, templates)
        for row in rb.rows:
            if row.kind == "kl":
                # The output KL also reads the KL prompt's last token: list it as a position
                # the step must feed (the prefix-cached layout otherwise stops at the subject).
                row.target_positions = [len(row.ids) - 1]
        return rb


@register_method
class LTIEditor(MEMITEditor):
    name = "memit_lti"
    hparams_cls = LTIHParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        n_layers = self.adapter.n_layers(self.model)
        if not self.critical_layer < self.hp.lti_midlayer < n_layers:
            # At or below l_m the free vector cannot reach the mid layer: the constraint would be void.
            raise HParamsError(f"memit_lti: lti_midlayer {self.hp.lti_midlayer} must lie above the last edit layer "
                               f"{self.critical_layer} and below {n_layers}")

    def target_settings(self) -> TargetSettings:
        settings = super().target_settings()
        settings.nll_factor = self.hp.lti_nll_factor
        return settings

    def target_optimizer(self) -> TargetOptimizer:
        hp = self.hp
        return LTITargetOptimizer(self.model, self.tok, self.adapter, self.target_settings(), hp.lti_midlayer,
                                  hp.lti_prefix, hp.lti_last_kl_factor, hp.lti_mid_kl_factor, self.loss_terms())
