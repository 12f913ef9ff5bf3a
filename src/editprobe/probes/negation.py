"""Negated queries (docs/protocol.md#negated-queries): the four settings PP, PN, NN, NP.

Flow: ``build_negation_plan(records)`` (data/negation_plan.py, re-exported here) negates
every record's template and yields the positive requests (p, s, o*) and the negative
requests (neg(p), s, o*); records whose template cannot be negated are excluded and
reported (count + reasons), never kept positive. Edit one model with ``plan.positive_requests()`` and another with
``plan.negative_requests()``; ``score_negation_run`` queries each edited model with both
p(s) and neg(p)(s), always scoring exact match of o*; ``negation_scores`` combines the two
runs into PP/PN/NN/NP efficacies and the discrepancies PP−PN, PP−NP, NN−PN, NN−NP, Avg;
``conditional_leakage`` gives PN and NP among the records whose edit succeeded (PN|PP, NP|NN).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, computed_field

# The edit plan is a data concept (data/negation_plan.py); re-exported here, where it lived.
from ..data.negation_plan import (  # noqa: F401
    ExcludedRecord, NegateFn, NegationItem, NegationPlan, build_negation_plan)
from ..data.transform import IDENTITY, PromptTransform
from .exact import match_and_decode
from .registry import NEGATION_CONDITIONAL, NEGATION_DISCREPANCY, NEGATION_SETTINGS, ProbeDefinition
from .results import ProbeSample, Score, one_decimal

EditedWith = Literal["positive", "negative"]
QueryRow = tuple[str, str, str, str]  # (record_id, setting, query, target)

# (edited with) -> ((setting, query kind), ...): which query each setting asks.
RUN_SETTINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "positive": (("PP", "positive"), ("PN", "negated")),
    "negative": (("NN", "negated"), ("NP", "positive")),
}
DISCREPANCIES = (("PP", "PN"), ("PP", "NP"), ("NN", "PN"), ("NN", "NP"))
# (leak, given): the leak rate among the records of one run whose `given` query hit.
CONDITIONAL = (("PN", "PP"), ("NP", "NN"))
DECODE_EXTRA = 3  # [choice] tokens decoded beyond the target for per-sample text


def score_queries(
    model, tok, rows: Sequence[QueryRow], probes: Mapping[str, ProbeDefinition],
    decode_extra: int | None = DECODE_EXTRA, batch_size: int = 32, transform: PromptTransform = IDENTITY,
) -> list[ProbeSample]:
    """Exact match for (record_id, setting, query, target) rows, each tagged with the probe
    ``probes[setting]``; with ``decode_extra`` the samples carry a greedy decode of
    len(target) + decode_extra tokens. Queries are asked through ``transform``; samples keep
    the original query."""
    pairs = [(transform.completion(q), t) for _, _, q, t in rows]
    # One pass per query gives the teacher-forced match and the decode (``batch_size`` is
    # kept for callers; batches are cut by a token budget).
    matches, decoded = match_and_decode(model, tok, pairs, decode_extra)
    return [
        ProbeSample(
            record_id=rid, setting=setting, probe=probes[setting].name, query=q, expected=t, match=m,
            generated=decoded[i].text if decoded else None, decode_match=decoded[i].match if decoded else None,
        )
        for i, ((rid, setting, q, t), m) in enumerate(zip(rows, matches))
    ]


class NegationRun(BaseModel):
    """One edited model (edited with all positive, or all negative, requests) queried with
    both the positive and the negated template."""

    model_config = ConfigDict(frozen=True)

    edited_with: EditedWith
    record_ids: tuple[str, ...]
    scores: dict[str, Score]
    samples: tuple[ProbeSample, ...]


def score_negation_run(
    model, tok, plan: NegationPlan, edited_with: EditedWith,
    decode_extra: int | None = DECODE_EXTRA, batch_size: int = 32, transform: PromptTransform = IDENTITY,
) -> NegationRun:
    """Score the model edited with ``plan.<edited_with>_requests()``: exact match of o*
    after the positive and after the negated query of every kept record."""
    if edited_with not in RUN_SETTINGS:
        raise ValueError(f"edited_with must be 'positive' or 'negative', not {edited_with!r}")
    items = plan.items if edited_with == "positive" else plan.negative_items
    rows = [
        (item.record.id, setting, item.query(kind), item.record.target_new)
        for setting, kind in RUN_SETTINGS[edited_with]
        for item in items
    ]
    samples = score_queries(model, tok, rows, NEGATION_SETTINGS, decode_extra, batch_size, transform)
    scores = {
        setting: Score.of(NEGATION_SETTINGS[setting], (s.match for s in samples if s.setting == setting))
        for setting, _ in RUN_SETTINGS[edited_with]
    }
    return NegationRun(edited_with=edited_with, record_ids=tuple(item.record.id for item in items), scores=scores,
                       samples=tuple(samples))


def conditional_leakage(runs: Sequence[NegationRun]) -> dict[str, Score]:
    """PN|PP and NP|NN (docs/protocol.md#leakage-among-successful-edits): per record of one
    edited model, whether the leak query hit, counted over the records whose edit query hit
    (n = those records; n = 0 gives no value)."""
    out: dict[str, Score] = {}
    for run in runs:
        by_setting: dict[str, list[ProbeSample]] = {}
        for sample in run.samples:
            by_setting.setdefault(sample.setting, []).append(sample)
        for leak, given in CONDITIONAL:
            if leak not in by_setting or given not in by_setting:
                continue
            # Both settings list the run's records in the same order (score_negation_run).
            pairs = list(zip(by_setting[given], by_setting[leak], strict=True))
            if any(g.record_id != k.record_id for g, k in pairs):
                raise ValueError(f"the {run.edited_with} run's {given} and {leak} samples are not the same records")
            out[f"{leak}|{given}"] = Score.of(NEGATION_CONDITIONAL[f"{leak}|{given}"],
                                              (k.match for g, k in pairs if g.match))
    return out


class NegationScores(BaseModel):
    """PP/PN/NN/NP efficacies (%, one decimal) and the discrepancies (docs/protocol.md#discrepancy).

    Either run may be missing (RLEdit is evaluated with PP and PN only); settings and
    discrepancies that need a missing run are None, and Avg is the mean of those that exist."""

    model_config = ConfigDict(frozen=True)

    settings: dict[str, Score]
    n_records: int
    n_excluded: int
    excluded: tuple[ExcludedRecord, ...]
    samples: tuple[ProbeSample, ...]
    discrepancy_label: str = NEGATION_DISCREPANCY.label

    def _exact(self, setting: str) -> float | None:
        score = self.settings.get(setting)
        return score.exact if score is not None else None

    def _value(self, setting: str) -> float | None:
        return one_decimal(self._exact(setting))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def PP(self) -> float | None:  # noqa: N802 - the paper's names
        return self._value("PP")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def PN(self) -> float | None:  # noqa: N802
        return self._value("PN")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def NN(self) -> float | None:  # noqa: N802
        return self._value("NN")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def NP(self) -> float | None:  # noqa: N802
        return self._value("NP")

    def _differences(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for a, b in DISCREPANCIES:
            x, y = self._exact(a), self._exact(b)
            out[f"{a}-{b}"] = None if x is None or y is None else x - y
        return out

    @computed_field  # type: ignore[prop-decorator]
    @property
    def discrepancies(self) -> dict[str, float | None]:
        """PP−PN, PP−NP, NN−PN, NN−NP from the unrounded efficacies, then rounded."""
        return {k: one_decimal(v) for k, v in self._differences().items()}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def avg(self) -> float | None:
        """The mean of the discrepancies that exist (the paper's Avg, as every table prints
        it); None when none does."""
        values = [v for v in self._differences().values() if v is not None]
        return one_decimal(sum(values) / len(values)) if values else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_disagreements(self) -> int:
        """Samples where the fast path and the decoded text's generate() verdict differ."""
        return sum(s.decode_match is not None and s.decode_match != s.match for s in self.samples)

    def row(self) -> dict[str, float | None]:
        """The table row of the paper: PP, PN, NN, NP, the four discrepancies, Avg."""
        return {"PP": self.PP, "PN": self.PN, "NN": self.NN, "NP": self.NP, **self.discrepancies, "Avg": self.avg}


def negation_scores(plan: NegationPlan, positive: NegationRun | None, negative: NegationRun | None) -> NegationScores:
    """Combine the runs of one plan (either may be None) into the table row (PP, PN, NN, NP, the discrepancies, Avg)."""
    settings: dict[str, Score] = {}
    samples: list[ProbeSample] = []
    for expected, run in (("positive", positive), ("negative", negative)):
        if run is None:
            continue
        if run.edited_with != expected:
            raise ValueError(f"the {expected} run was edited with {run.edited_with!r} requests")
        items = plan.items if expected == "positive" else plan.negative_items
        if run.record_ids != tuple(item.record.id for item in items):
            raise ValueError(f"the {expected} run scored other records than the plan holds")
        settings.update(run.scores)
        samples.extend(run.samples)
    if not settings:
        raise ValueError("no run given: pass the positive run, the negative run or both")
    return NegationScores(settings=settings, n_records=plan.n_records, n_excluded=plan.n_excluded,
                          excluded=plan.excluded, samples=tuple(samples))
