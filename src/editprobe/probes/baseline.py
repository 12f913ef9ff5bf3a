"""The no-edit baseline of the negation settings (docs/protocol.md#no-edit-baseline; the paper's
appendix A.7).

On the unedited model the ground truth is the old object o. Only records whose positive
query the model exact-matches with o are kept (so PP is 100 by construction); PN is the
share of those where o still follows the negated query. Question datasets (zsRE) and
records without an old object get no baseline: the result says so instead of a number.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, ConfigDict, computed_field

from .negation import DECODE_EXTRA, NegationItem, NegationPlan, QueryRow, score_queries
from .registry import NO_EDIT_KNOWN, NO_EDIT_PN, NO_EDIT_PP
from .results import ProbeSample, Score

QUESTION_REASON = "question dataset (zsRE): no old object to score the unedited model with, no baseline"
NO_TARGET_REASON = "no old object (target_true) in the record"


def _skip_reason(item: NegationItem) -> str | None:
    if item.record.is_question:
        return QUESTION_REASON
    if not item.record.target_true or not item.record.target_true.strip():
        return NO_TARGET_REASON
    return None


class NoEditBaseline(BaseModel):
    """The "No edit" row: PP (100 by construction) and PN over the records the unedited
    model knows. ``available`` is False, with ``note`` saying why, when no record qualifies."""

    model_config = ConfigDict(frozen=True)

    available: bool
    note: str
    n_records: int  # records of the plan (negatable ones)
    skipped: dict[str, int]  # reason -> records without a baseline
    known: Score  # o on the positive query, over records with an old object
    pp: Score  # over the known records: hits == n
    pn: Score  # o on the negated query, over the known records
    samples: tuple[ProbeSample, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def PP(self) -> float | None:  # noqa: N802 - the paper's names
        return self.pp.value if self.available else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def PN(self) -> float | None:  # noqa: N802
        return self.pn.value if self.available else None

    def row(self) -> dict[str, float | None]:
        return {"PP": self.PP, "PN": self.PN}


def no_edit_baseline(
    model, tok, plan: NegationPlan, decode_extra: int | None = DECODE_EXTRA, batch_size: int = 32
) -> NoEditBaseline:
    """Score the unedited ``model`` on the plan's records with the old object o."""
    skipped: Counter[str] = Counter()
    candidates: list[NegationItem] = []
    for item in plan.items:
        reason = _skip_reason(item)
        if reason is None:
            candidates.append(item)
        else:
            skipped[reason] += 1

    def rows(items: list[NegationItem], setting: str, kind: str) -> list[QueryRow]:
        return [(i.record.id, setting, i.query(kind), i.record.target_true or "") for i in items]

    probes = {"no-edit-P": NO_EDIT_KNOWN, "no-edit-N": NO_EDIT_PN}
    positive = score_queries(model, tok, rows(candidates, "no-edit-P", "positive"), probes, decode_extra, batch_size) \
        if candidates else []
    known_ids = {s.record_id for s in positive if s.match}
    kept = [i for i in candidates if i.record.id in known_ids]
    negated = score_queries(model, tok, rows(kept, "no-edit-N", "negated"), probes, decode_extra, batch_size) \
        if kept else []

    if not candidates:
        note = "no baseline: " + ("; ".join(sorted(skipped)) if skipped else "no records")
    elif not kept:
        note = f"no baseline: the unedited model exact-matches the old object on none of {len(candidates)} records"
    else:
        note = (f"baseline over {len(kept)}/{len(candidates)} records whose old object the unedited model "
                "exact-matches after the positive query")
        if skipped:
            note += "; skipped: " + ", ".join(f"{n} ({r})" for r, n in skipped.items())
    return NoEditBaseline(
        available=bool(kept),
        note=note,
        n_records=plan.n_records,
        skipped=dict(skipped),
        known=Score.of(NO_EDIT_KNOWN, (s.match for s in positive)),
        pp=Score.of(NO_EDIT_PP, (s.match for s in positive if s.record_id in known_ids)),
        pn=Score.of(NO_EDIT_PN, (s.match for s in negated)),
        samples=tuple(positive + negated),
    )
