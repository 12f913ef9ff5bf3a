"""The edited fact asked as a question, a cloze or a two-choice question (docs/battery.md):
which text each record is asked, where it came from, and the records a battery probe scores.

Precedence for a record's question (and cloze): the record's own field (the paper authors'
files carry ``question`` and ``cloze``; MQuAKE a single-hop ``question``), unless it is the
edit prompt itself; then, for a question dataset (zsRE), the record's prompt, which already
is a question (and no cloze); then the table (the user's ``battery.question_table`` over the
shipped ``data/builtin/question_forms.yaml``), keyed by the record's template. A record none
of them covers is skipped and counted with the reason.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from ..data.negation import template_key
from ..data.question_forms import QuestionTable, question_table
from .battery import battery_settings, known_fact_ids, known_records

Form = Literal["question", "cloze"]
QUESTION_FRAME = "Q: {} A:"  # a bare question as a completion prompt; the answer follows
SOURCE_RECORD, SOURCE_PROMPT, SOURCE_TABLE = "record", "prompt (already a question)", "table"
NO_ENTRY = "no entry for its template in the question table"
NO_CLOZE = "no cloze in its template's entry"
QUESTION_DATASET = "question dataset (zsRE): the prompt is already a question, no cloze"
NO_OLD_OBJECT = "no old object (target_true): no true fact to ask the unedited model"
_BLANK = re.compile(r"\s*(_{2,}|\[MASK\]|<mask>)\s*[.?]?\s*$")
_FRAMED = re.compile(r"^\s*(Q|Question)\s*:\s*(?P<q>.*?)\s*(A|Answer)\s*:\s*$", re.S)


def table_of(ctx) -> QuestionTable:
    """The question table of the run (a bad user table fails in the run's plan, before work)."""
    return question_table(battery_settings(ctx).question_table)


def has_true_object(record) -> bool:
    """A record with a true object o to ask the unedited model (a zsRE question read toward
    alt has one; unlike the A.7 filter, questions count)."""
    return bool(record.target_true and record.target_true.strip())


def _own(record, key: str) -> str | None:
    """The record's own text for ``key`` (subject filled in), or None where it has none or it
    is the edit prompt itself (that would read the edit's own prompt back)."""
    text = (record.extra or {}).get(key)
    if not isinstance(text, str) or not text.strip():
        return None
    if text.count("{}") == 1:
        text = text.replace("{}", record.subject)
    return None if template_key(text) == template_key(record.query) else text.strip()


def bare_question(record, table: QuestionTable) -> tuple[str | None, str]:
    """(the question without framing, its source) or (None, why not)."""
    own = _own(record, "question")
    if own is not None:
        framed = _FRAMED.match(own)
        return (framed.group("q") if framed else own), SOURCE_RECORD
    if record.is_question:
        return record.query, SOURCE_PROMPT
    forms = table.get(record.template)
    return (forms.question.format(record.subject), SOURCE_TABLE) if forms else (None, NO_ENTRY)


def question_query(record, table: QuestionTable) -> tuple[str | None, str]:
    """(the question the question-forms probe asks, its source) or (None, why not). zsRE's is
    its prompt as it is: it already is a question."""
    question, source = bare_question(record, table)
    if question is None or source == SOURCE_PROMPT:
        return question, source
    return QUESTION_FRAME.format(question), source


def cloze_query(record, table: QuestionTable) -> tuple[str | None, str]:
    """(the cloze, ending where the object goes, its source) or (None, why not). A record's
    own cloze ending in a blank ("___") is asked without it; one with a blank elsewhere is not
    a completion prompt and the table's is asked instead."""
    own = _own(record, "cloze")
    if own is not None:
        own = _BLANK.sub("", own)
        if "___" not in own and own:
            return own, SOURCE_RECORD
    if record.is_question:
        return None, QUESTION_DATASET
    forms = table.get(record.template)
    if forms is None:
        return None, NO_ENTRY
    return (forms.cloze.format(record.subject), SOURCE_TABLE) if forms.cloze else (None, NO_CLOZE)


# --- the records scored ----------------------------------------------------------------------------
def scored_records(ctx, stage: str, baseline: dict[str, Any] | None) -> tuple[list, list[str] | None]:
    """(the records to score at ``stage``, the known ids or None): the baseline measures the
    known ids (when asked), the edit stages read them from it."""
    known = known_fact_ids(ctx) if stage == "baseline" else (baseline or {}).get("known")
    return known_records(ctx.records, known), known


def count(reasons: Sequence[str]) -> dict[str, int]:
    return dict(Counter(reasons))
