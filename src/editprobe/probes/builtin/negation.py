"""The negation probe (docs/protocol.md#negated-queries): PP, PN, NN, NP, their discrepancies and
Avg, the leakage among successful edits (PN|PP, NP|NN); on the unedited model the "No edit" row
(PP 100 by construction, PN)."""

from __future__ import annotations

from typing import Any

from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..baseline import NoEditBaseline, no_edit_baseline
from ..negation import NegationRun, conditional_leakage, negation_scores, score_negation_run
from ..registry import NEGATION_DISCREPANCY, NEGATION_SETTINGS, NO_EDIT_PN, NO_EDIT_PP

SETTINGS = ("PP", "PN", "NN", "NP")
DISCREPANCIES = ("PP-PN", "PP-NP", "NN-PN", "NN-NP")


def discrepancy_metrics(values: dict[str, float | None], exact: dict[str, float | None]) -> dict[str, Metric]:
    """The four differences that both sides exist for, and Avg = the mean of those that do
    (the paper's No-edit rows print PP−PN = Avg)."""
    out: dict[str, Metric] = {}
    diffs = []
    for key in DISCREPANCIES:
        a, b = key.split("-")
        if exact.get(a) is None or exact.get(b) is None:
            continue
        d = exact[a] - exact[b]  # type: ignore[operator]
        diffs.append(d)
        out[key] = Metric(value=round(d, 1), label=NEGATION_DISCREPANCY.label, unit="points", higher_is_better=True)
    if diffs:
        out["Avg"] = Metric(value=round(sum(diffs) / len(diffs), 1), n=len(diffs), label=NEGATION_DISCREPANCY.label,
                            unit="points", higher_is_better=True)
    return out


@register_probe
class NegationProbe(Probe):
    name = "negation"
    stages = ("baseline", "positive", "negative")
    description = "exact match of o* after the positive and the negated query, edited both ways (PP/PN/NN/NP)"
    table = "negation"

    def measure(self, ctx: ProbeContext, stage, baseline) -> dict[str, Any]:
        if stage == "baseline":
            return no_edit_baseline(ctx.model, ctx.tokenizer, ctx.plan).model_dump(mode="json")
        return score_negation_run(ctx.model, ctx.tokenizer, ctx.plan, stage,
                                  transform=ctx.transform).model_dump(mode="json")

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        base = NoEditBaseline.model_validate(baseline)
        rows = [{"edited_with": "none", **s.model_dump(mode="json")} for s in base.samples]
        metrics: dict[str, Metric] = {}
        if base.available:
            metrics = {"PP": Metric.of_score(base.pp, True), "PN": Metric.of_score(base.pn, False)}
            metrics.update(discrepancy_metrics({}, {"PP": base.pp.exact, "PN": base.pn.exact}))
        return self.outcome(metrics, available=base.available, note=base.note, n_known=base.pp.n,
                            known=base.known.model_dump(), skipped=base.skipped,
                            labels={"PP": NO_EDIT_PP.label, "PN": NO_EDIT_PN.label}), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        runs = {kind: NegationRun.model_validate(states[kind]) for kind in ("positive", "negative") if kind in states}
        scores = negation_scores(ctx.plan, runs.get("positive"), runs.get("negative"))
        metrics = {k: Metric.of_score(s, NEGATION_SETTINGS[k].higher_is_better) for k, s in scores.settings.items()}
        metrics.update(discrepancy_metrics({}, {k: s.exact for k, s in scores.settings.items()}))
        conditional = conditional_leakage(list(runs.values()))
        metrics.update({k: Metric.of_score(s, False) for k, s in conditional.items()})
        rows = [{"edited_with": run.edited_with, **s.model_dump(mode="json")} for run in runs.values()
                for s in run.samples]
        return self.outcome(metrics, counts={k: [s.hits, s.n] for k, s in scores.settings.items()},
                            decode_disagreements=scores.decode_disagreements), rows
