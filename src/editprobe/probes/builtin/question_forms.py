"""The question-forms probe (docs/battery.md#question-forms): the edited fact asked as a
question ("Q: What is the mother tongue of X? A:") and as a cloze ("X's first language:"),
teacher-forced exact match of o* after each (`question`, `cloze`, per record 0/100). The
No-edit row asks the same forms of the unedited model with the true object o.
"""

from __future__ import annotations

from typing import Any

from ...forms import QueryForm
from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import BATTERY_TABLE, floor_flag, per_record_hits
from ..negation import DECODE_EXTRA, score_queries
from ..questions import (
    NO_OLD_OBJECT, cloze_query, count, has_true_object, question_query, scored_records, table_of,
)
from ..registry import ProbeDefinition, register_definition
from ..results import ProbeSample

NAME = "question-forms"
FORMS = ("question", "cloze")
_EM = "exact-match, teacher-forced greedy (argmax = target at every target token)"
_DOC = "docs/battery.md#question-forms"
_ASKED = {"question": "the fact asked as a question ('Q: <question> A:'; zsRE: its own question prompt)",
          "cloze": "the fact as a cloze sentence ending where the object goes, worded unlike the edit prompt"}
DEFINITIONS = {
    form: register_definition(ProbeDefinition(
        name=f"{NAME}/{form}", label=f"{_EM}, target = new object o*, query = {_ASKED[form]}; per record 0/100",
        protocol=_DOC, higher_is_better=True))
    for form in FORMS
}
NO_EDIT = {
    form: register_definition(ProbeDefinition(
        name=f"{NAME}/no-edit-{form}", label=f"{_EM}, unedited model, target = old object o, query = {_ASKED[form]}",
        protocol=_DOC, higher_is_better=True))
    for form in FORMS
}


def _queries(ctx: ProbeContext, records: list) -> tuple[list[tuple[Any, str, str]], dict, dict]:
    """(record, form, query) for every form a record has; per form, the skip reasons and the
    sources counted."""
    table = table_of(ctx)
    asked, skipped, sources = [], {f: [] for f in FORMS}, {f: [] for f in FORMS}
    for record in records:
        for form, build in (("question", question_query), ("cloze", cloze_query)):
            query, source = build(record, table)
            if query is None:
                skipped[form].append(source)
            else:
                asked.append((record, form, query))
                sources[form].append(source)
    return asked, {f: count(r) for f, r in skipped.items()}, {f: count(s) for f, s in sources.items()}


def _metrics(samples: list[ProbeSample], definitions: dict[str, ProbeDefinition]) -> dict[str, Metric]:
    return {form: Metric.of_records(per_record_hits((s.record_id, s.match) for s in samples if s.setting == form),
                                    definitions[form].label, higher_is_better=True)
            for form in FORMS}


@register_probe
class QuestionFormsProbe(Probe):
    name = NAME
    stages = ("baseline", "positive")
    description = "exact match of o* after the fact asked as a question and as a cloze"
    table = BATTERY_TABLE
    metric_forms = {"question": frozenset({QueryForm.QUESTION}), "cloze": frozenset({QueryForm.CLOZE})}

    def applies_to(self, ctx: ProbeContext) -> bool:
        table = table_of(ctx)
        return any(question_query(r, table)[0] or cloze_query(r, table)[0] for r in ctx.records)

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        records, known = scored_records(ctx, stage, baseline)
        no_old = []
        if stage == "baseline":  # the unedited model is asked the true fact
            no_old = [r for r in records if not has_true_object(r)]
            records = [r for r in records if has_true_object(r)]
        asked, skipped, sources = _queries(ctx, records)
        for form in FORMS:
            if no_old:
                skipped[form][NO_OLD_OBJECT] = len(no_old)
        target = (lambda r: r.target_true) if stage == "baseline" else (lambda r: r.target_new)
        rows = [(r.id, form, q, target(r)) for r, form, q in asked]
        definitions = NO_EDIT if stage == "baseline" else DEFINITIONS
        samples = score_queries(ctx.model, ctx.tokenizer, rows, definitions, DECODE_EXTRA, transform=ctx.transform)
        return {"samples": [s.model_dump(mode="json") for s in samples], "skipped": skipped, "sources": sources,
                "known": known}

    def _outcome(self, state: dict[str, Any], definitions, flag: str | None) -> ProbeOutcome:
        samples = [ProbeSample.model_validate(s) for s in state["samples"]]
        return self.outcome(_metrics(samples, definitions), skipped=state["skipped"], sources=state["sources"],
                            known_only=state["known"] is not None, flag=flag)

    def _flag(self, baseline: dict[str, Any]) -> str | None:
        samples = [ProbeSample.model_validate(s) for s in baseline["samples"]]
        return floor_flag(_metrics(samples, NO_EDIT)["question"].value)

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        rows = [{"edited_with": "none", **s} for s in baseline["samples"]]
        return self._outcome(baseline, NO_EDIT, self._flag(baseline)), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        after = states["positive"]
        flag = self._flag(states["baseline"]) if "baseline" in states else None
        rows = [{"edited_with": "positive", **s} for s in after["samples"]]
        return self._outcome(after, DEFINITIONS, flag), rows
