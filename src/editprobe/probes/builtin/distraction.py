"""Prefix distraction (docs/battery.md#prefix-distraction; EVOKE's prefix distraction): the edited
statement, then an unrelated query — about the same subject under another relation, or a
neighbourhood prompt of the record (another subject) — and whether its greedy answer is o*.

``distracted``: per record, the share of its distraction queries after which o* follows
(teacher-forced exact match of o*; lower is better). The No-edit row asks the unedited model the
very same text, o* statement included: what putting the statement in the prompt does by itself
(prompt injection). ``delta`` = the method's value − the No-edit value, per record.
"""

from __future__ import annotations

import random
from typing import Any

from ...forms import QueryForm
from ..base import TEACHER_FORCED_EM, Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, FLOOR, floor_flag, per_record_hits
from ..battery_queries import ask, known_at, known_only, known_share, sample_rows

# Generic relation prompts about the subject (our wording), asked after the statement; one per
# record, chosen by seed among those whose template differs from the record's.
OTHER_RELATIONS = (
    "{} was born in the city of",
    "{} is a citizen of",
    "The profession of {} is",
    "{} is located in the country of",
    "The headquarters of {} are in",
    "The name of the founder of {} is",
)
SUBJECT, NEIGHBOUR = "subject", "neighbour"
DISTRACTED, DELTA = "distracted", "delta"

LABELS = {
    DISTRACTED: f"{TEACHER_FORCED_EM}: o* after '<edit prompt> o*.' followed by another relation's prompt about the "
                "subject and a neighbourhood prompt (where the record has one); share per record, mean over records",
    DELTA: "the method's 'distracted' − the unedited model's on the same text (o* statement included), per record, "
           "in points",
}
NO_EDIT_LABEL = (f"{TEACHER_FORCED_EM}, unedited model given the same text, o* statement included (the prompt-"
                 "injection baseline): o* after the distraction query; share per record, mean over records")
# The unedited model already answers o* after nearly every query: the statement alone does it,
# and an edit cannot be told apart from it.
CEILING = 100.0 - FLOOR


def statement(record) -> str:
    """The edited fact as a sentence: "<edit prompt> o*."."""
    return f"{record.query} {record.target_new}."


def _key(template: str) -> str:
    return " ".join(template.split()).lower()


def distraction_queries(record, seed: int) -> list[dict[str, str]]:
    """The record's queries ({setting, query}): the statement, then another relation's prompt
    about the subject; and then one of its neighbourhood prompts when it has any (seeded)."""
    rng = random.Random(f"{seed}:distraction:{record.id}")
    others = [t for t in OTHER_RELATIONS if _key(t) != _key(record.template)]
    prefix = statement(record)
    out = [{"setting": SUBJECT, "query": f"{prefix} {rng.choice(others).format(record.subject)}"}]
    neighbours = [pa.prompt for pa in record.neighborhood if pa.prompt.strip()]
    if neighbours:
        out.append({"setting": NEIGHBOUR, "query": f"{prefix} {rng.choice(neighbours)}"})
    return out


def _flag(no_edit_value: float | None, known: float | None) -> str | None:
    if no_edit_value is not None and no_edit_value >= CEILING:
        return (f"at its ceiling: the unedited model given the statement answers o* on {no_edit_value:.1f} "
                "(the statement alone does it)")
    return floor_flag(known)


@register_probe
class DistractionProbe(Probe):
    name = "distraction"
    stages = ("baseline", "positive")
    description = "the edited statement, then an unrelated query about the subject or a neighbour: o* answered?"
    table = BATTERY_TABLE
    # Opt-in [measured]: with it in the default set the battery would cost more than 30 % of a run's
    # evaluation (docs/battery.md#cost; make bench, stage "battery").
    default = False
    metric_forms = {DISTRACTED: frozenset({QueryForm.DISTRACTION}), DELTA: frozenset({QueryForm.DISTRACTION})}

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        known, ids, records = known_at(ctx, stage, baseline)
        seed = getattr(ctx.config, "seed", 0) or 0
        queries = [{"record_id": r.id, "expected": r.target_new, **q} for r in records
                   for q in distraction_queries(r, seed)]
        return {"asked": known + ask(ctx, queries), "known_ids": ids, "known_only": known_only(ctx),
                "n_records": len(records)}

    @staticmethod
    def _distracted(state: dict[str, Any]) -> dict[str, float]:
        return per_record_hits((q["record_id"], q["match"]) for q in state["asked"]
                               if q["setting"] in (SUBJECT, NEIGHBOUR))

    @staticmethod
    def _counts(state: dict[str, Any]) -> dict[str, list[int]]:
        """setting -> [hits, n]."""
        out: dict[str, list[int]] = {}
        for q in state["asked"]:
            if q["setting"] in (SUBJECT, NEIGHBOUR):
                c = out.setdefault(q["setting"], [0, 0])
                c[0] += int(q["match"])
                c[1] += 1
        return out

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        values = self._distracted(baseline)
        metrics = {DISTRACTED: Metric.of_records(values, NO_EDIT_LABEL, higher_is_better=False)} if values else {}
        share, n = known_share(baseline["asked"])
        value = metrics[DISTRACTED].value if metrics else None
        return self.outcome(metrics, flag=_flag(value, share), known=share, n_with_old_object=n,
                            counts=self._counts(baseline), known_only=baseline["known_only"]), \
            sample_rows(baseline["asked"], self.name, "none")

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after, base = states["positive"], states.get("baseline")
        values = self._distracted(after)
        metrics = {}
        if values:
            metrics[DISTRACTED] = Metric.of_records(values, LABELS[DISTRACTED], higher_is_better=False)
        flag = None
        if base is not None:
            before = self._distracted(base)
            delta = {rid: v - before[rid] for rid, v in values.items() if rid in before}
            if delta:
                metrics[DELTA] = Metric.of_records(delta, LABELS[DELTA], unit="points", higher_is_better=False)
            no_edit = Metric.mean(list(before.values()), NO_EDIT_LABEL).value if before else None
            flag = _flag(no_edit, known_share(base["asked"])[0])
        return self.outcome(metrics, flag=flag, counts=self._counts(after), known_only=after["known_only"],
                            n_records=after["n_records"]), sample_rows(after["asked"], self.name, "positive")
