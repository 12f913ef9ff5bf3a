"""The curve over edits (``eval: every``, docs/curves.md): the run evaluates after every K batches
of each editing stage, and after its last.

A point measures, on the model as edited so far:

- **edited**: the curve probes (``curve.probes``, each one of the run's probes) over the
  stage's records, combined with the run's baseline and reported over the records edited so
  far (:meth:`~editprobe.probes.base.Metric.restricted_to`): the metrics that are means over
  records; a metric without per-record values is left out of this part;
- **heldout**: the held-out probes over the held-out slice (records no stage edits; their
  baseline measured once per dataset), as the probes' positive stage measures an edited model.

An editor with a final step (PRUNE) is measured finalized and then carries on unfinalized
(``Editor.finalized_view``); an in-context editor is asked through its transform of the facts
given so far. Each point is stored as a stage file when it is measured, before the batch's
checkpoint, so a resumed run measures no point twice and its curve equals an uninterrupted
run's. Every batch re-seeds torch and random, so a point changes no later edit.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from ..probes.base import Probe, ProbeContext, ProbeOutcome
from .store import RunDir

EDITED, HELDOUT = "edited", "heldout"


@dataclass
class HeldOut:
    """A dataset's held-out slice: its context, the probes that apply to it and their
    measurement of the unedited model."""

    ctx: ProbeContext
    probes: list[Probe]
    baseline: dict[str, Any]


def measure_heldout_baseline(run_dir: RunDir, stage: str, ctx: ProbeContext, probes: list[Probe]) -> HeldOut | None:
    """The held-out slice's baseline (one stage file per dataset); None without a slice or a
    probe that applies to it."""
    applying = [p for p in probes if p.applies_to(ctx)]
    if not ctx.records or not applying:
        return None
    done = run_dir.load_stage(stage)
    if done is None:
        done = {"probes": {p.name: p.measure(ctx, "baseline", None) for p in applying if "baseline" in p.stages}}
        run_dir.save_stage(stage, done)
    return HeldOut(ctx, applying, done["probes"])


@dataclass
class StageCurve:
    """The points of one editing stage of one method."""

    run_dir: RunDir
    stage: str  # the stage's file name, e.g. "cf__memit__positive"
    kind: str  # "positive" | "negative"
    every: int
    total: int  # batches in the stage
    batch_size: int
    request_ids: list[str]  # in editing order
    ctx: ProbeContext
    probes: list[Probe]  # the curve probes that measure this stage
    baseline: dict[str, Any]  # the run's baseline measurement of each
    heldout: HeldOut | None

    def due(self, batch: int) -> bool:
        """Whether a point follows batch ``batch`` (0-based)."""
        return (batch + 1) % self.every == 0 or batch + 1 == self.total

    def point_stage(self, batch: int) -> str:
        return f"{self.stage}__curve{batch + 1:05d}"

    def evaluate(self, editor, batch: int) -> None:
        """Measure and store the point after ``batch`` unless it is stored already."""
        if not self.due(batch) or self.run_dir.load_stage(self.point_stage(batch)) is not None:
            return
        started = time.perf_counter()
        edits = min(len(self.request_ids), (batch + 1) * self.batch_size)
        with editor.finalized_view():
            transform = editor.prompt_transform()
            points = [self._edited(transform, batch, edits)]
            if self.heldout is not None:
                points.append(self._heldout(transform, batch, edits))
        self.run_dir.save_stage(self.point_stage(batch), {"points": [p for p in points if p is not None],
                                                          "seconds": round(time.perf_counter() - started, 3)})

    def points(self) -> list[dict[str, Any]]:
        """Every stored point of the stage, in batch order (CurvePoint dicts)."""
        out = []
        for b in range(self.total):
            if self.due(b):
                done = self.run_dir.load_stage(self.point_stage(b))
                out += done["points"] if done is not None else []
        return out

    def _edited(self, transform, batch: int, edits: int) -> dict[str, Any] | None:
        if not self.probes:
            return None
        asked = dataclasses.replace(self.ctx, transform=transform)
        ids = self.request_ids[:edits]
        outcomes: dict[str, ProbeOutcome] = {}
        for p in self.probes:
            state = p.measure(asked, self.kind, self.baseline.get(p.name))  # type: ignore[arg-type]
            states = {"baseline": self.baseline[p.name], self.kind: state} if p.name in self.baseline \
                else {self.kind: state}
            outcome, _ = p.combine(self.ctx, states, outcomes)
            outcomes[p.name] = outcome
        restricted = {p.name: _restricted(outcomes[p.name], ids, p.not_on_curve) for p in self.probes}
        return _point(self.kind, batch, edits, EDITED, len(ids), {k: o for k, o in restricted.items() if o.metrics})

    def _heldout(self, transform, batch: int, edits: int) -> dict[str, Any]:
        held = self.heldout
        assert held is not None
        asked = dataclasses.replace(held.ctx, transform=transform)
        outcomes: dict[str, ProbeOutcome] = {}
        for p in held.probes:
            state = p.measure(asked, "positive", held.baseline.get(p.name))
            states = {"positive": state, **({"baseline": held.baseline[p.name]} if p.name in held.baseline else {})}
            outcome, _ = p.combine(held.ctx, states, outcomes)
            outcomes[p.name] = outcome
        return _point(self.kind, batch, edits, HELDOUT, len(held.ctx.records),
                      {k: o.model_copy(update={"details": {}}) for k, o in outcomes.items()})


def _restricted(outcome: ProbeOutcome, ids: list[str], left_out: frozenset[str]) -> ProbeOutcome:
    """The outcome's per-record metrics over ``ids`` but those its probe leaves off a curve; the
    others dropped (they are over every record)."""
    metrics = {k: m.restricted_to(ids) for k, m in outcome.metrics.items()
               if m.records is not None and k not in left_out}
    return outcome.model_copy(update={"metrics": metrics, "details": {}})


def _point(kind: str, batch: int, edits: int, part: str, n_records: int,
           outcomes: dict[str, ProbeOutcome]) -> dict[str, Any]:
    return {"stage": kind, "batches": batch + 1, "edits": edits, "part": part, "n_records": n_records,
            "probes": {k: o.model_dump(mode="json") for k, o in outcomes.items()}}
