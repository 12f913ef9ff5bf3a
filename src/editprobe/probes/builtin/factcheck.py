"""The fact-checking probe (docs/protocol.md#fact-checking): after the positive edit, is the
edited statement judged true? Eff (the negation probe's PP of the same edited model) beside
Acc, the balanced control, and the "No edit" row.

The "No edit" row is restricted as the negation no-edit row is: to the records whose old
object the unedited model exact-matches after the positive query, so its Eff is 100 by
construction (the paper's Table 5); question datasets (zsRE) have no such row."""

from __future__ import annotations

from typing import Any

from ...forms import QueryForm
from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..battery import floor_flag
from ..exact import exact_match_batch
from ..factcheck import FactCheckReply, FactCheckResult, ask_records, fact_check_result
from ..intervals import bootstrap, wilson
from ..registry import FACTCHECK_ACCURACY, FACTCHECK_CONTROL, FACTCHECK_NO_EDIT, NO_EDIT_PP

BALANCED_LABEL = ("fact-check via chat template; mean of 'true' to the o* statement and 'false' to the o statement "
                  "after the edit, over the included records with an old object")


OWN_EFF_LABEL = ("exact match of o* after the edit prompt, over every edited record (the negation settings leave "
                 "out records whose query cannot be negated)")


def _flag(no_edit: ProbeOutcome | None) -> str | None:
    """The unedited model's flag (it judges almost no true statement true: at its floor, so
    Acc cannot show an edit), carried on every row of the dataset."""
    return no_edit.details.get("flag") if no_edit is not None else None


def _replies(rows: list[dict]) -> list[FactCheckReply]:
    return [FactCheckReply.model_validate(r) for r in rows]


def _row(setting: str, edited_with: str, r: FactCheckReply) -> dict[str, Any]:
    """A reply in the per-sample shape: the 'expected' answer is always true; the
    statement's own truth differs (the control's old object is the unedited fact)."""
    return {"edited_with": edited_with, "record_id": r.record_id, "setting": setting, "probe": setting,
            "query": r.statement, "expected": "true", "generated": r.generated, "answer": r.answer,
            "match": r.answer == "true"}


def _balanced(result: FactCheckResult) -> Metric:
    """The balanced accuracy with its bootstrap interval: per record, the mean of 'true' to
    o* and 'false' to o (both answers of one record drawn together)."""
    per_record = {s.record_id: ((s.after == "true") + (s.control == "false")) / 2 for s in result.samples
                  if s.included and s.control is not None}
    lo, hi = bootstrap(list(per_record.values())) or (None, None)
    return Metric(value=result.balanced_accuracy, label=BALANCED_LABEL, higher_is_better=True, lo=lo, hi=hi,
                  records={rid: 100.0 * v for rid, v in per_record.items()})


def _eff_records(pp: Metric | None, after: dict[str, Any]) -> dict[str, float] | None:
    """Eff's per-record hits (×100): this probe's own when it measured Eff itself (stage files
    written before they were kept have only the share: none then), else the negation PP's."""
    if after.get("eff") is not None:
        hits = after.get("eff_hits")
        return None if hits is None else {rid: 100.0 * float(hit) for rid, hit in hits.items()}
    return pp.records if pp is not None else None


@register_probe
class FactCheckProbe(Probe):
    name = "factcheck"
    stages = ("baseline", "positive")
    description = "the edited model, in its chat template, judges the edited statement true or false"
    table = "factcheck"
    uses = ("negation",)  # Eff is the negation probe's PP
    metric_forms = {"Eff": frozenset({QueryForm.POSITIVE}),
                    **{k: frozenset({QueryForm.QUESTION}) for k in ("Acc", "Control", "Balanced")}}

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        model, tok, cfg = ctx.model, ctx.tokenizer, ctx.config.factcheck
        records = ctx.records
        if stage == "baseline":
            with_old = [r for r in records if r.target_true and r.target_true.strip() and not r.is_question]
            known = exact_match_batch(model, tok, [(r.query, r.target_true) for r in with_old]) if with_old else []
            return {"known": [r.id for r, k in zip(with_old, known) if k],
                    "no_edit": [x.model_dump(mode="json") for x in ask_records(model, tok, with_old, "old", cfg)],
                    "before": [x.model_dump(mode="json") for x in ask_records(model, tok, records, "new", cfg)]}
        how = ctx.transform
        state = {"after": [x.model_dump(mode="json") for x in ask_records(model, tok, records, "new", cfg, how)],
                 "control": [x.model_dump(mode="json") for x in ask_records(model, tok, records, "old", cfg, how)]}
        if len(records) != ctx.plan.n_records:  # the negation settings leave records out: Eff over these
            hits = exact_match_batch(model, tok, [(how.completion(r.query), r.target_new) for r in records])
            state["eff"] = round(100.0 * sum(hits) / len(hits), 1)
            state["eff_hits"] = {r.id: bool(hit) for r, hit in zip(records, hits)}  # per record (compare)
        return state

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        replies = _replies(baseline["no_edit"])
        rows = [_row("factcheck-no-edit", "none", r) for r in replies]
        rows += [_row("factcheck-before", "none", r) for r in _replies(baseline["before"])]
        if not replies:  # zsRE: no old object (docs/protocol.md#no-edit-baseline)
            return None, rows
        known = set(baseline["known"])
        kept = [r for r in replies if r.record_id in known]
        hits = sum(r.answer == "true" for r in kept)
        lo, hi = wilson(hits, len(kept)) or (None, None)
        metrics = {
            "Eff": Metric(value=100.0 if kept else None, n=len(kept), label=NO_EDIT_PP.label, higher_is_better=True,
                          records={r.record_id: 100.0 for r in kept}),
            "Acc": Metric(value=round(100.0 * hits / len(kept), 1) if kept else None, n=len(kept),
                          label=FACTCHECK_NO_EDIT.label + "; restricted to the records whose old object the unedited "
                                "model exact-matches", higher_is_better=True, lo=lo, hi=hi,
                          records={r.record_id: 100.0 * (r.answer == "true") for r in kept}),
        }
        counts: dict[str, int] = {}
        for r in kept:
            counts[r.answer] = counts.get(r.answer, 0) + 1
        return self.outcome(metrics, counts=counts, n_with_old_object=len(replies),
                            chat_template=all(r.chat_template for r in replies),
                            flag=floor_flag(metrics["Acc"].value)), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        base, after = states["baseline"], states["positive"]
        negation = others.get("negation")
        own_eff = after.get("eff")  # over every edited record, when the negation settings leave some out
        result = fact_check_result(_replies(base["before"]), _replies(after["after"]),
                                   eff=own_eff if own_eff is not None else (negation.value("PP") if negation else None),
                                   control=_replies(after["control"]), config=ctx.config.factcheck)
        eff_label = (OWN_EFF_LABEL if own_eff is not None else
                     negation.metrics["PP"].label if negation and "PP" in negation.metrics else NO_EDIT_PP.label)
        # Eff read from the negation probe's PP carries PP's interval; the own Eff carries a Wilson
        # interval and its n from its per-record hits (a stage written before they were kept: none).
        pp = negation.metrics.get("PP") if negation is not None and own_eff is None else None
        lo, hi, eff_n = (pp.lo, pp.hi, None) if pp else (None, None, None)
        if own_eff is not None and after.get("eff_hits"):
            hits = after["eff_hits"]
            eff_n = len(hits)
            lo, hi = wilson(sum(map(bool, hits.values())), eff_n) or (None, None)
        control = result.control_score
        included = [s for s in result.samples if s.included]
        metrics = {
            "Eff": Metric(value=result.eff, label=eff_label, higher_is_better=True, lo=lo, hi=hi, n=eff_n,
                          records=_eff_records(pp, after)),
            "Acc": Metric.of_score(result.accuracy_score, True, {s.record_id: s.after == "true" for s in included}),
            "Control": Metric.of_score(control, None, {s.record_id: s.control == "true" for s in included
                                                       if s.control is not None})
            if control is not None else Metric(value=None, label=FACTCHECK_CONTROL.label),
            "Balanced": _balanced(result),
        }
        rows = [_row("factcheck-after", "positive", r) for r in _replies(after["after"])]
        rows += [_row("factcheck-control", "positive", r) for r in _replies(after["control"])]
        sources: dict[str, int] = {}
        for reply in _replies(after["after"]):
            sources[reply.statement_source] = sources.get(reply.statement_source, 0) + 1
        return self.outcome(metrics, n_records=result.n_records, before_counts=result.before_counts,
                            after_counts=result.after_counts, chat_template=result.chat_template,
                            statement_sources=sources, label=FACTCHECK_ACCURACY.label,
                            flag=_flag(ctx.no_edit.get(self.name))), rows
