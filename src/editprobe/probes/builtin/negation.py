"""The negation probe (docs/protocol.md#negated-queries): PP, PN, NN, NP, their discrepancies and
Avg, the leakage among successful edits (PN|PP, NP|NN); on the unedited model the "No edit" row
(PP 100 by construction, PN)."""

from __future__ import annotations

from typing import Any

from ...forms import QueryForm
from ..base import Metric, Probe, ProbeContext, ProbeOutcome, Rows, register_probe
from ..baseline import NoEditBaseline, no_edit_baseline
from ..intervals import paired
from ..negation import CONDITIONAL, NegationRun, conditional_leakage, negation_scores, score_negation_run
from ..registry import NEGATION_DISCREPANCY, NEGATION_SETTINGS, NO_EDIT_PN, NO_EDIT_PP

SETTINGS = ("PP", "PN", "NN", "NP")
_EDITED, _OPPOSITE = frozenset({QueryForm.POSITIVE}), frozenset({QueryForm.NEGATED})
_BOTH = _EDITED | _OPPOSITE
DISCREPANCIES = ("PP-PN", "PP-NP", "NN-PN", "NN-NP")


def discrepancy_metrics(values: dict[str, float | None], exact: dict[str, float | None],
                        per_record: dict[str, dict[str, float]] | None = None) -> dict[str, Metric]:
    """The four differences that both sides exist for, and Avg = the mean of those that do
    (the paper's No-edit rows print PP−PN = Avg). With ``per_record`` (setting -> record id
    -> 0/1), each gets its paired bootstrap interval: the records drawn once for both sides."""
    out: dict[str, Metric] = {}
    diffs, pairs = [], []
    for key in DISCREPANCIES:
        a, b = key.split("-")
        if exact.get(a) is None or exact.get(b) is None:
            continue
        d = exact[a] - exact[b]  # type: ignore[operator]
        diffs.append(d)
        pairs.append((a, b))
        lo, hi = _paired(per_record, [(a, b)])
        out[key] = Metric(value=round(d, 1), label=NEGATION_DISCREPANCY.label, unit="points", higher_is_better=True,
                          lo=lo, hi=hi, records=_differences(per_record, [(a, b)]))
    if diffs:
        lo, hi = _paired(per_record, pairs)
        out["Avg"] = Metric(value=round(sum(diffs) / len(diffs), 1), n=len(diffs), label=NEGATION_DISCREPANCY.label,
                            unit="points", higher_is_better=True, lo=lo, hi=hi, records=_differences(per_record, pairs))
    return out


def _differences(per_record: dict[str, dict[str, float]] | None, pairs: list[tuple[str, str]]
                 ) -> dict[str, float] | None:
    """Per record, the mean over ``pairs`` of ``a − b`` in points, for the records every side
    of every pair has (the figure's mean is over each side's own records, so where the sides'
    records differ the per-record mean is over the shared ones only)."""
    if not per_record or any(s not in per_record for pair in pairs for s in pair):
        return None
    shared = set.intersection(*(set(per_record[s]) for pair in pairs for s in pair))
    return {rid: 100.0 * sum(per_record[a][rid] - per_record[b][rid] for a, b in pairs) / len(pairs)
            for rid in per_record[pairs[0][0]] if rid in shared}


def _paired(per_record: dict[str, dict[str, float]] | None, pairs: list[tuple[str, str]]
            ) -> tuple[float | None, float | None]:
    """The paired bootstrap interval of the mean of the differences ``a − b`` over ``pairs``."""
    if not per_record or any(s not in per_record for pair in pairs for s in pair):
        return None, None
    used = {s for pair in pairs for s in pair}
    found = paired({s: per_record[s] for s in used}, lambda m: sum(m[a] - m[b] for a, b in pairs) / len(pairs))
    return found or (None, None)


def _matches(samples, settings: dict[str, str]) -> dict[str, dict[str, float]]:
    """setting -> record id -> 1.0/0.0 (exact match) from scored samples; ``settings`` maps a
    sample's setting to the name it is reported under."""
    out: dict[str, dict[str, float]] = {}
    for sample in samples:
        if sample.setting in settings:
            out.setdefault(settings[sample.setting], {})[sample.record_id] = float(sample.match)
    return out


def _conditional_records(per_record: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """PN|PP and NP|NN per record: the leak outcome of each record whose edit query hit."""
    out = {}
    for leak, given in CONDITIONAL:
        hits = per_record.get(given, {})
        out[f"{leak}|{given}"] = {rid: v for rid, v in per_record.get(leak, {}).items() if hits.get(rid) == 1.0}
    return out


@register_probe
class NegationProbe(Probe):
    name = "negation"
    stages = ("baseline", "positive", "negative")
    description = "exact match of o* after the positive and the negated query, edited both ways (PP/PN/NN/NP)"
    table = "negation"
    # Relative to the edit request: the edited prompt (PP; NN, the negated edit's own prompt) and
    # the query of opposite polarity (PN, NP) — the one ``negation: defend`` trains on.
    metric_forms = {"PP": _EDITED, "NN": _EDITED, "PN": _OPPOSITE, "NP": _OPPOSITE,
                    **{k: _BOTH for k in (*DISCREPANCIES, "Avg", "PN|PP", "NP|NN")}}
    not_on_curve = frozenset({"Avg"})  # one stage's Avg is its one discrepancy again

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
            # PP is 100 by construction (the records the model knows): no interval to give.
            known = _matches(base.samples, {"no-edit-P": "PP", "no-edit-N": "PN"})
            known["PP"] = {rid: 1.0 for rid, hit in known.get("PP", {}).items() if hit}
            known["PN"] = {rid: hit for rid, hit in known.get("PN", {}).items() if rid in known["PP"]}
            pp = Metric.of_score(base.pp, True, known["PP"]).model_copy(update={"lo": None, "hi": None})
            metrics = {"PP": pp, "PN": Metric.of_score(base.pn, False, known["PN"])}
            metrics.update(discrepancy_metrics({}, {"PP": base.pp.exact, "PN": base.pn.exact}, known))
        return self.outcome(metrics, available=base.available, note=base.note, n_known=base.pp.n,
                            known=base.known.model_dump(), skipped=base.skipped,
                            labels={"PP": NO_EDIT_PP.label, "PN": NO_EDIT_PN.label}), rows

    def combine(self, ctx: ProbeContext, states, others) -> tuple[ProbeOutcome, Rows]:
        runs = {kind: NegationRun.model_validate(states[kind]) for kind in ("positive", "negative") if kind in states}
        scores = negation_scores(ctx.plan, runs.get("positive"), runs.get("negative"))
        per_record = _matches(scores.samples, {k: k for k in SETTINGS})
        metrics = {k: Metric.of_score(s, NEGATION_SETTINGS[k].higher_is_better, per_record.get(k, {}))
                   for k, s in scores.settings.items()}
        metrics.update(discrepancy_metrics({}, {k: s.exact for k, s in scores.settings.items()}, per_record))
        conditional, among = conditional_leakage(list(runs.values())), _conditional_records(per_record)
        metrics.update({k: Metric.of_score(s, False, among.get(k)) for k, s in conditional.items()})
        rows = [{"edited_with": run.edited_with, **s.model_dump(mode="json")} for run in runs.values()
                for s in run.samples]
        return self.outcome(metrics, counts={k: [s.hits, s.n] for k, s in scores.settings.items()},
                            decode_disagreements=scores.decode_disagreements), rows
