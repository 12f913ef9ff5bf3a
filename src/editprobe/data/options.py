"""How a dataset is read, beyond its file: which zsRE answer is the edit target, and what
``n`` counts in MQuAKE.

zsRE is not a counterfactual dataset: a record has the question's answers and ``alt``, an
alternative answer. The MEMIT and AlphaEdit repositories — and the paper's own zsRE file —
edit toward ``answers[0]`` with no old object (``zsre_target: answers``, the default);
EasyEdit edits toward ``alt`` with ``answers[0]`` as the old object (``zsre_target: alt``).
The same holds for KnowEdit's zsRE (its question records: ``ground_truth`` / ``target_new``).
In ``answers`` mode a record keeps ``alt`` in ``extra["alt"]`` (the fact-check's false
statement uses it, as the paper's does) and has no portability questions: EasyEdit's are
written for the ``alt`` answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from .records import EditRecord

ZsreTarget = Literal["answers", "alt"]
MquakeUnit = Literal["case", "rewrite"]
ZSRE_TARGETS: tuple[str, ...] = ("answers", "alt")
# How summaries written before the option existed read: the loader then edited toward alt.
ZSRE_TARGET_BEFORE = "alt"
PORTABILITY_NOT_SCORED = "not scored: EasyEdit's zsRE portability questions are written for the alt answer"


class DatasetOptions(BaseModel):
    """Options of how every dataset of a job is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    zsre_target: ZsreTarget = "answers"
    # MQuAKE: ``case`` keeps a case's rewrites together (n counts cases; multi-hop accuracy
    # is defined); ``rewrite`` edits single rewrites as the paper does (n counts rewrites, an
    # exact duplicate — subject, relation, target — kept once; no multi-hop accuracy).
    mquake_unit: MquakeUnit = "case"


def is_zsre(record: EditRecord) -> bool:
    """A zsRE record whose target convention the option decides: the MEND format's, or
    KnowEdit's zsRE (its question records)."""
    return record.source_format == "zsre" or (record.source_format == "knowedit" and record.is_question)


def apply_options(records: Sequence[EditRecord], options: DatasetOptions) -> list[EditRecord]:
    """The records as ``options`` read them (the converters read zsRE the ``alt`` way)."""
    if options.zsre_target == "alt":
        return list(records)
    return [_toward_answers(r) if is_zsre(r) and r.target_true else r for r in records]


def _toward_answers(record: EditRecord) -> EditRecord:
    extra = {**record.extra, "alt": record.target_new, "zsre_target": "answers"}
    if record.portability:
        extra["portability"] = PORTABILITY_NOT_SCORED
    return record.model_copy(update={"target_new": record.target_true, "target_true": None, "portability": (),
                                     "extra": extra})


def dataset_targets(records: Sequence[EditRecord], options: DatasetOptions) -> str | None:
    """What a dataset's records are edited toward, for summaries and reports (None: no zsRE)."""
    if not any(is_zsre(r) or r.extra.get("zsre_target") for r in records):
        return None
    return ("zsRE answers[0], no old object" if options.zsre_target == "answers"
            else "zsRE alt, answers[0] as the old object")


MULTIHOP_NOT_DEFINED = "multi-hop accuracy: not defined when MQuAKE is edited as single rewrites (mquake_unit: rewrite)"


def single_rewrites(records: Sequence[EditRecord], positions: Sequence[int], limit: int | None
                    ) -> tuple[list[EditRecord], list[int]]:
    """MQuAKE's rewrites one by one, in file order (``mquake_unit: rewrite``): the first
    ``limit`` distinct (subject, relation, target_new) rewrites, with no case and no
    multi-hop questions (they need a case's edits together)."""
    kept: list[EditRecord] = []
    kept_positions: list[int] = []
    seen: set[tuple[str, str | None, str]] = set()
    for record, position in zip(records, positions):
        key = (record.subject, record.relation_id or record.template, record.target_new)
        if key in seen:
            continue
        if limit is not None and len(kept) >= limit:
            break
        seen.add(key)
        kept.append(record.model_copy(update={"case_id": None, "portability": (),
                                              "extra": {**record.extra, "mquake_unit": "rewrite"}}))
        kept_positions.append(position)
    return kept, kept_positions


def dataset_notes(records: Sequence[EditRecord]) -> list[str]:
    """What a run's summary should say about how its records were read."""
    notes = []
    if any(r.extra.get("mquake_unit") == "rewrite" for r in records):
        notes.append(MULTIHOP_NOT_DEFINED)
    if any(r.extra.get("portability") == PORTABILITY_NOT_SCORED for r in records):
        notes.append(f"portability: {PORTABILITY_NOT_SCORED}")
    return notes
