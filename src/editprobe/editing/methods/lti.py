"""MEMIT-LTI ("Learn to Inference", lte-methods.md §11): MEMIT whose target optimization
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

The teacher rows are built and tokenized on their own: the subject index of a prefixed row
points at the subject's last token in the *prompt* part (after the prefix, which also
contains the subject), and its target window comes from that row. The reimplementations
read (ENC, FE) reuse the unprefixed rows' indices for the prefixed batch, which with right
padding points at the wrong tokens; we do not reproduce that [U: unknown whether the
official EVOKE code has it]. Defaults are ENC's Llama-3-8B factors (nll 0.125, last-KL
0.0725, mid-KL 0.0425); FE uses nll 1 and last-KL 0.0625.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ...data.records import EditRequest
from ...models.hooks import capture, first_tensor
from ...models.tokens import join_target
from ..hparams import HParamsError
from ..prompts import RowBatch, batch_rows, rewrite_rows
from ..replay import final_hidden, logits_at
from ..targets import TargetOptimizer, TargetResult, TargetSettings
from .memit import MEMITEditor, MEMITHParams
from ..plugins import register_method


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


def teacher_rows(tok, requests: list[EditRequest], templates: list[str], kl_prompt: str | None, lead: str):
    """Per request: every template-prefixed rewriting row behind the teacher prefix (own subject
    index and target window), then the unprefixed KL row."""
    rows = []
    for r, req in enumerate(requests):
        ctx = teacher_prefix(req, lead)
        for row in rewrite_rows(tok, [req], [ctx + t for t in templates], None):
            row.request = r
            rows.append(row)
        for row in rewrite_rows(tok, [req], [], kl_prompt):
            row.request = r
            rows.append(row)
    return rows


def _kl(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(P ‖ Q) per row from log-probabilities."""
    return (logp.exp() * (logp - logq)).sum(-1)


class LTITargetOptimizer(TargetOptimizer):
    def __init__(self, model, tok, adapter, settings: TargetSettings, midlayer: int, lead: str,
                 last_kl: float, mid_kl: float):
        super().__init__(model, tok, adapter, settings)
        self.midlayer, self.lead, self.last_kl, self.mid_kl = midlayer, lead, last_kl, mid_kl
        self._mid_path = adapter.path("block", midlayer)
        self._norm = adapter.module(model, "final_norm")

    def build_rows(self, requests: list[EditRequest], templates: list[str]) -> RowBatch:
        rb = super().build_rows(requests, templates)
        for row in rb.rows:
            if row.kind == "kl":
                # The output KL also reads the KL prompt's last token: list it as a position
                # the step must feed (the prefix-cached layout otherwise stops at the subject).
                row.target_positions = [len(row.ids) - 1]
        return rb

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(logits_at(self.model, self._norm(h)), -1)

    def run(self, requests: list[EditRequest], templates: list[str]) -> TargetResult:
        self._requests, self._templates = requests, templates
        self._mid: torch.Tensor | None = None

        def keep(module, args, output):  # the mid-layer output of the latest forward, with grad
            self._mid = first_tensor(output)

        handle = self.model.get_submodule(self._mid_path).register_forward_hook(keep)
        try:
            return super().run(requests, templates)
        finally:
            handle.remove()
            self._mid = None

    @torch.no_grad()
    def prepare(self, layout, hidden0, ctx: dict) -> None:
        rows = teacher_rows(self.tok, self._requests, self._templates, self.s.kl_prompt, self.lead)
        rb = batch_rows(self.tok, rows, "right")
        batch = rb.batch.to(self.device)
        with capture(self.model, [self._mid_path]) as got:
            hidden = final_hidden(self.model, batch)
        mid = got[self._mid_path]
        self.teacher_out: dict[tuple, torch.Tensor] = {}
        self.teacher_mid: dict[tuple, torch.Tensor] = {}
        for i, row in enumerate(rows):
            key = (row.request, row.kind, row.template)
            pos = row.target_positions if row.kind == "rewrite" else [len(row.ids) - 1]
            at = torch.tensor([batch.position(i, p) for p in pos], device=self.device)
            self.teacher_out[key] = torch.log_softmax(logits_at(self.model, hidden[i, at]), -1)
            self.teacher_mid[key] = self.lens(mid[i, batch.position(i, row.subject_index)])
        for row in layout.rows:  # the student's rows must line up with the teacher's, label for label
            key = (row.request, row.kind, row.template)
            if key not in self.teacher_out or len(self.teacher_out[key]) != max(1, len(row.target_labels)):
                raise ValueError(f"memit_lti: teacher row {key} does not match the student's target window")

    def losses(self, rb, hidden, active, ctx):
        terms = super().losses(rb, hidden, active, ctx)
        local = {int(r): i for i, r in enumerate(active.tolist())}
        out_rows, out_pos, out_req, teacher_out = [], [], [], []
        mid_rows, mid_pos, mid_req, teacher_mid = [], [], [], []
        for i, row in enumerate(rb.rows):
            key = (row.request, row.kind, row.template)
            for p in row.target_positions:
                out_rows.append(i)
                out_pos.append(rb.batch.position(i, p))
                out_req.append(local[row.request])
            teacher_out.append(self.teacher_out[key])
            mid_rows.append(i)
            mid_pos.append(rb.batch.position(i, row.subject_index))
            mid_req.append(local[row.request])
            teacher_mid.append(self.teacher_mid[key])
        n = len(active)
        student = torch.log_softmax(logits_at(self.model, hidden[out_rows, out_pos]), -1)
        last = self._mean_per_request(_kl(student, torch.cat(teacher_out)), out_req, n)
        lens = self.lens(self._mid[mid_rows, mid_pos])
        mid = self._mean_per_request(_kl(lens, torch.stack(teacher_mid)), mid_req, n)
        terms["extra"] = self.last_kl * last + self.mid_kl * mid
        terms["last_kl"], terms["mid_kl"] = last, mid
        return terms

    def _mean_per_request(self, values: torch.Tensor, req: list[int], n: int) -> torch.Tensor:
        idx = torch.tensor(req, device=values.device)
        total = torch.zeros(n, device=values.device).index_add(0, idx, values)
        count = torch.zeros(n, device=values.device).index_add(0, idx, torch.ones_like(values))
        return total / count.clamp(min=1)


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
                                  hp.lti_prefix, hp.lti_last_kl_factor, hp.lti_mid_kl_factor)
