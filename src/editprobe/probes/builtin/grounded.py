"""Grounded efficacy (docs/battery.md#grounded-efficacy): the battery's headline.

Per record, the conjunction of the battery's parts it has (``GROUNDED_PARTS``): PP hit,
paraphrase hit, negated-paraphrase miss, question-form hit, two-choice picks o* in both
orders. It measures nothing itself: it reads the per-record values of the probes that ran
before it (``others``; ``uses`` orders it after them). A part whose probe is not in the run,
or that a record lacks, is left out for that record, and the outcome says over which parts
each number was computed. A part whose probe is flagged on this model (at its floor or at
chance on the true fact: ``details.flag``) is left out of every row of the dataset, and named
(``flagged_out``): it cannot speak, and would decide the conjunction alone.

The No-edit row is the same conjunction on the unedited model's no-edit values (the run hands
them over in ``ProbeContext.no_edit``), on the true fact o: over the records the unedited model
knows (the negation probe's no-edit PP, the A.7 filter) where that part ran, and without the
classic paraphrase EM, whose no-edit value asks o* (the number an edit must beat), not o.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...forms import QueryForm
from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, GROUNDED_PARTS, floor_flag, grounded_record
from ..registry import ProbeDefinition, register_definition

Part = tuple[str, str]  # (probe, metric)

# The form each part asks (its probe's metric_forms; tests/test_probes_grounded.py checks them
# against the registered probes), so a row trained on one of them has the grounded cell marked.
PART_FORMS: dict[Part, QueryForm] = {
    ("negation", "PP"): QueryForm.POSITIVE,
    ("paraphrase", "EM"): QueryForm.PARAPHRASE,
    ("heldout-negation", "NPara"): QueryForm.NEGATED_PARAPHRASE,
    ("question-forms", "question"): QueryForm.QUESTION,
    ("two-choice", "both"): QueryForm.TWO_CHOICE,
}
# Parts whose no-edit value is not on the true fact: the classic no-edit row asks o*.
NOT_ON_TRUE_FACT: frozenset[Part] = frozenset({("paraphrase", "EM")})
KNOWN_FILTER: Part = ("negation", "PP")  # its no-edit values keep only the records the model knows


def part_name(part: Part) -> str:
    return f"{part[0]} {part[1]}"


def _conjunction_text() -> str:
    return " ∧ ".join(f"{part_name(p)} {rule}" for p, rule in GROUNDED_PARTS.items())


GROUNDED = register_definition(ProbeDefinition(
    name="grounded/efficacy",
    label=f"conjunction per record: {_conjunction_text()} (hit = every query of the record gives o*, miss = none "
          "does), over the parts the record has (details: parts and their n); 100 when all hold, else 0",
    protocol="docs/battery.md#grounded-efficacy", higher_is_better=True))
NO_EDIT_LABEL = ("unedited model, target = the true object o: the same conjunction over the parts measured on the "
                 "true fact, over the records the model knows (negation no-edit PP); paraphrase EM left out (its "
                 "no-edit value asks o*)")


def grounded_values(parts: Mapping[Part, Mapping[str, float]], only: set[str] | None = None
                    ) -> tuple[dict[str, bool], dict[str, dict[str, float]]]:
    """record id -> whether it meets every part it has, and record id -> its parts' values
    (by part name); ``only``: the records to judge (else every record some part has)."""
    rules = {part_name(p): GROUNDED_PARTS[p] for p in parts}
    ids = set().union(*(set(v) for v in parts.values())) if parts else set()
    if only is not None:
        ids &= only
    values = {rid: {part_name(p): v[rid] for p, v in parts.items() if rid in v} for rid in sorted(ids)}
    return {rid: grounded_record(vals, rules) for rid, vals in values.items()}, values


def part_records(outcomes: Mapping[str, ProbeOutcome], skip: frozenset[Part] = frozenset()
                 ) -> dict[Part, dict[str, float]]:
    """The per-record values of every part that ran (in ``outcomes``) and keeps them, except
    a part whose probe is flagged on this model (at its floor or at chance: it cannot speak,
    and would decide the conjunction alone — SmolLM2-135M answers every two-choice "A")."""
    out = {}
    for part in GROUNDED_PARTS:
        outcome = outcomes.get(part[0])
        metric = outcome.metrics.get(part[1]) if outcome is not None else None
        if part not in skip and metric is not None and metric.records is not None and not _flagged(outcome):
            out[part] = dict(metric.records)
    return out


def flagged_parts(outcomes: Mapping[str, ProbeOutcome]) -> list[str]:
    """The parts left out because their probe is flagged (``details.flag``) on this model."""
    return [part_name(p) for p in GROUNDED_PARTS
            if (o := outcomes.get(p[0])) is not None and p[1] in o.metrics and _flagged(o)]


def _flagged(outcome: ProbeOutcome | None) -> bool:
    return bool(outcome is not None and outcome.details.get("flag"))


def coverage(values: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Over which parts the number was computed: each part's n, and which parts every judged
    record has and which only some."""
    counts: dict[str, int] = {}
    for parts in values.values():
        for name in parts:
            counts[name] = counts.get(name, 0) + 1
    ordered = {part_name(p): counts[part_name(p)] for p in GROUNDED_PARTS if part_name(p) in counts}
    return {"parts": ordered, "every_record": [p for p, n in ordered.items() if n == len(values)],
            "some_records": [p for p, n in ordered.items() if n < len(values)],
            "absent": [part_name(p) for p in GROUNDED_PARTS if part_name(p) not in counts]}


@register_probe
class GroundedProbe(Probe):
    name = "grounded"
    stages = ("baseline", "positive")  # measures nothing; the stages give it a No-edit and a method row
    description = ("grounded efficacy: per record, the conjunction of the battery's parts it has (PP, paraphrase, "
                   "negated paraphrase, question, two-choice)")
    table = BATTERY_TABLE
    uses = tuple(dict.fromkeys(probe for probe, _ in GROUNDED_PARTS))  # after every part's probe
    metric_forms = {"grounded": frozenset(PART_FORMS.values())}

    def applies_to(self, ctx: ProbeContext) -> bool:
        configured = getattr(ctx.config, "probes", None)
        return configured is None or any(probe in configured for probe in self.uses)

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        return {}

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        parts = part_records(ctx.no_edit, skip=NOT_ON_TRUE_FACT)
        known = set(parts[KNOWN_FILTER]) if KNOWN_FILTER in parts else None
        hits, values = grounded_values(parts, known)
        if not hits:
            return None, []  # no part measured the true fact on this dataset: no row
        metric = Metric.of_records({rid: float(h) for rid, h in hits.items()}, NO_EDIT_LABEL)
        flag = floor_flag(metric.value)
        return (self.outcome({"grounded": metric}, **coverage(values), flag=flag,
                             left_out=[part_name(p) for p in sorted(NOT_ON_TRUE_FACT)],
                             flagged_out=flagged_parts(ctx.no_edit)),
                _rows(hits, values, "none"))

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        # A part flagged on the unedited model is left out of every row of the dataset.
        flagged = set(flagged_parts(ctx.no_edit))
        hits, values = grounded_values(part_records(others, skip=frozenset(p for p in GROUNDED_PARTS
                                                                           if part_name(p) in flagged)))
        details = {**coverage(values), "flagged_out": sorted(flagged)}
        if not hits:
            details["skipped"] = ("none of its parts ran on this dataset (or kept per-record values): "
                                  + ", ".join(part_name(p) for p in GROUNDED_PARTS))
        metric = (Metric.of_records({rid: float(h) for rid, h in hits.items()}, GROUNDED.label) if hits
                  else Metric(value=None, n=0, label=GROUNDED.label, higher_is_better=True))
        own = ctx.no_edit.get(self.name)
        return (self.outcome({"grounded": metric}, **details, flag=floor_flag(own.value("grounded") if own else None)),
                _rows(hits, values, "positive"))


def _rows(hits: Mapping[str, bool], values: Mapping[str, Mapping[str, float]], edited_with: str) -> Rows:
    """One sample row per judged record: its parts and their values, and the verdict."""
    return [{"edited_with": edited_with, "record_id": rid, "setting": "grounded", "probe": "grounded",
             "query": " ∧ ".join(values[rid]),
             "expected": ", ".join(f"{name} {GROUNDED_PARTS[_part(name)]}" for name in values[rid]),
             "generated": ", ".join(f"{name} {v:.0f}" for name, v in values[rid].items()), "match": hit,
             "parts": dict(values[rid])}
            for rid, hit in hits.items()]


def _part(name: str) -> Part:
    return next(p for p in GROUNDED_PARTS if part_name(p) == name)
