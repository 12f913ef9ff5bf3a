"""Negation-aware target search (``negation: defend``), as two loss terms.

At the subject's last token the key of "X is" and "X is not" is the same (causal
attention), so a locate-then-edit update gives both queries the new value. ``defend``
optimizes the target on the opposite-polarity query too (same context templates, its
own rows of kind "opposite", teacher-forced on the new target o*), with one δ:

- ``NegationUnlikelihood``: mean over the opposite rows' target tokens of −log(1 − p(o*_t)),
  which pushes the new target down where the polarity is reversed;
- ``NegationKL``: mean over the bare opposite query's target positions of KL(P_δ ‖ P_0),
  P_0 being the unedited model's distribution (from the plain pass), which keeps the rest
  of that query's distribution where it was.

The opposite rows never enter the target's own NLL, top-1 or KL (those read only
"rewrite" and "kl" rows). A request does not stop early while its unlikelihood is at least
``hold`` (the editor passes ``early_stop_loss``), even when a method's own rule would stop
it (PMET); the step budget still ends it. See docs/negation-editing.md.
"""

from __future__ import annotations

import torch

from ...data.records import EditRequest
from ...models.resume_forward import logits_at
from .objective import BaseLossTerm, StepContext, local_index, per_request_mean
from ..prompts import RequestError, Row, target_row, validate_request

OPPOSITE = "opposite"  # the kind of the opposite-polarity rows
_MAX_P = 1.0 - 1e-6  # −log(1 − p) stays finite (≤ 13.8) and its gradient bounded


def with_opposite_template(req: EditRequest) -> EditRequest:
    """``req`` with its opposite-polarity template: its own, else the built-in negation
    rules' negation of its template. A template the rules cannot negate (an already negated
    one among them) is a RequestError naming the request."""
    from ...data.negation import negate

    if req.opposite_template is None:
        neg = negate(req.template)
        if not neg.ok:
            raise RequestError(
                f"request {req.id}: negation=defend needs the opposite-polarity query, and the template "
                f"{req.template!r} cannot be negated ({neg.reason}); give the request an opposite_template")
        req = req.model_copy(update={"opposite_template": neg.negated})
    # the subject must be found in the opposite query too
    validate_request(req.model_copy(update={"template": req.opposite_template}))
    return req


def opposite_rows(tok, requests: list[EditRequest], templates: list[str], locate: str) -> list[Row]:
    """Every context template × opposite query, teacher-forced on the new target."""
    rows = []
    for r, req in enumerate(requests):
        req = with_opposite_template(req)
        for t, ctx in enumerate(templates):
            rows.append(target_row(tok, req, r, ctx[: ctx.index("{}")], req.opposite_template, t, OPPOSITE, locate))
    return rows


class _OppositeTerm(BaseLossTerm):
    def __init__(self, factor: float, adds_rows: bool = True):
        self.factor, self.adds_rows = factor, adds_rows

    def rows(self, tok, requests, templates, locate):
        # Both negation terms read the same rows; only one of them adds them.
        return opposite_rows(tok, requests, templates, locate) if self.adds_rows else []

    @staticmethod
    def _targets(rb, active: torch.Tensor, keep=lambda i, row: True):
        """(row, batch position, label, local request) of every target token of the opposite rows."""
        local = local_index(active)
        out = ([], [], [], [])
        for i, row in enumerate(rb.rows):
            if row.kind != OPPOSITE or not keep(i, row):
                continue
            for p, y in zip(row.target_positions, row.target_labels):
                for lst, v in zip(out, (i, rb.batch.position(i, p), y, local[row.request])):
                    lst.append(v)
        return out


class NegationUnlikelihood(_OppositeTerm):
    """Per request: mean over the opposite rows' target tokens of −log(1 − p(token))."""

    name = "negation_unlikelihood"

    def __init__(self, factor: float = 1.0, hold: float | None = None, adds_rows: bool = True):
        super().__init__(factor, adds_rows)
        self.hold_at = hold

    def __call__(self, rb, hidden, active, ctx: StepContext) -> torch.Tensor:
        rows, pos, labels, req = self._targets(rb, active)
        logp = torch.log_softmax(logits_at(ctx.model, hidden[rows, pos]), -1)
        p = logp[torch.arange(len(labels)), torch.tensor(labels, device=logp.device)].exp().clamp(max=_MAX_P)
        return per_request_mean(-torch.log1p(-p), torch.tensor(req), len(active))

    def hold(self, value: torch.Tensor) -> torch.Tensor | None:
        return None if self.hold_at is None else value >= self.hold_at

    def cache_identity(self) -> dict:
        return {"factor": self.factor, "hold": self.hold_at, "adds_rows": self.adds_rows}


class NegationKL(_OppositeTerm):
    """Per request: mean over the bare opposite query's target positions of KL(P_δ ‖ P_0).

    Only the bare template's row (template 0): P_0 is a vocabulary-sized vector per position,
    and one query per request keeps that memory at n·T·vocab floats."""

    name = "negation_kl"

    def cache_identity(self) -> dict:
        return {"factor": self.factor, "adds_rows": self.adds_rows}

    def prepare(self, layout, hidden0, ctx: StepContext) -> None:
        self._p0: dict[int, torch.Tensor] = {}
        for i, row in enumerate(layout.rows):
            if row.kind == OPPOSITE and row.template == 0:
                at = [layout.batch.position(i, p) for p in row.target_positions]
                self._p0[i] = torch.log_softmax(logits_at(ctx.model, hidden0[i, at]), -1)

    def __call__(self, rb, hidden, active, ctx: StepContext) -> torch.Tensor:
        layout_row = ctx.live_rows.tolist()
        rows, pos, _, req = self._targets(rb, active, keep=lambda i, row: layout_row[i] in self._p0)
        p0 = torch.cat([self._p0[layout_row[i]] for i in dict.fromkeys(rows)])
        logp = torch.log_softmax(logits_at(ctx.model, hidden[rows, pos]), -1)
        kl = (logp.exp() * (logp - p0)).sum(-1)
        return per_request_mean(kl, torch.tensor(req), len(active))


def negation_terms(unlikelihood: float = 1.0, kl: float = 0.0625, hold: float | None = None) -> list[BaseLossTerm]:
    """The ``defend`` objective: both terms, the opposite rows added once."""
    return [NegationUnlikelihood(unlikelihood, hold=hold), NegationKL(kl, adds_rows=False)]
