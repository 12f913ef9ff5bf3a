"""The question and cloze forms of the datasets' prompt templates (docs/battery.md#question-forms).

A table maps a template ("The mother tongue of {} is") to a question about the subject whose
answer is the object ("What is the mother tongue of {}?") and, optionally, a cloze: a sentence
ending where the object goes, worded unlike the template ("{}'s first language:"). The shipped
table is ``builtin/question_forms.yaml``; a user table of the same shape
(``battery.question_table``) overrides it template by template. Templates are keyed as the
negation tables key them (WCF and the paper's files carry no relation id), up to runs of
whitespace. A bad table is one line naming the file and the entry, raised before any work.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..errors import quoted
from .errors import DataError
from .negation import read_table_yaml, template_key
from .placeholders import one_subject_slot

BUILTIN_QUESTION_FORMS = Path(__file__).resolve().parent / "builtin" / "question_forms.yaml"
FORM_KEYS = ("question", "cloze")


class QuestionTableError(DataError):
    """A bad question table; ``str(err)`` names the file and the offending entry."""

    def __init__(self, path: str | Path | None, message: str, entry: str | None = None):
        self.entry = entry
        super().__init__(path, f"entry {quoted(entry)}: {message}" if entry is not None else message)


class QuestionForms(BaseModel):
    """The forms of one template, each with exactly one "{}" (the subject)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    question: str
    cloze: str | None = None


class QuestionTable(BaseModel):
    """template key -> its forms; ``sources`` names the files it was read from."""

    model_config = ConfigDict(frozen=True)

    entries: dict[str, QuestionForms] = Field(default_factory=dict)
    sources: tuple[str, ...] = ()

    def get(self, template: str) -> QuestionForms | None:
        return self.entries.get(template_key(template))

    def over(self, base: "QuestionTable") -> "QuestionTable":
        """This table's entries over ``base``'s (a user table over the shipped one)."""
        return QuestionTable(entries={**base.entries, **self.entries}, sources=base.sources + self.sources)


def _entry(path: str | Path, template: Any, body: Any) -> QuestionForms:
    entry = template if isinstance(template, str) else quoted(template)
    if not isinstance(template, str):
        raise QuestionTableError(path, "the template must be a string", entry)
    try:
        one_subject_slot(template)
    except ValueError as exc:
        raise QuestionTableError(path, f"the template {exc}", entry) from None
    if not isinstance(body, Mapping) or "question" not in body:
        raise QuestionTableError(path, "must be a mapping with 'question' (and optionally 'cloze')", entry)
    unknown = sorted(set(map(str, body)) - set(FORM_KEYS))
    if unknown:
        raise QuestionTableError(path, f"unknown key(s) {', '.join(unknown)} (allowed: question, cloze)", entry)
    for key in FORM_KEYS:
        text = body.get(key)
        if text is None and key == "cloze":
            continue
        if not isinstance(text, str) or not text.strip():
            raise QuestionTableError(path, f"the {key} must be a non-empty string", entry)
        try:
            one_subject_slot(text)
        except ValueError as exc:
            raise QuestionTableError(path, f"the {key} {exc}", entry) from None
        if template_key(text) == template_key(template):
            raise QuestionTableError(path, f"the {key} is the template unchanged (it would ask the edit prompt)", entry)
    return QuestionForms(question=body["question"], cloze=body.get("cloze"))


def load_question_table(path: str | Path) -> QuestionTable:
    """Read a YAML table ``template: {question, cloze}``; every entry is checked (strings,
    exactly one "{}" in each, no form equal to its template)."""
    data = read_table_yaml(path, QuestionTableError)
    if data is None:
        return QuestionTable(sources=(str(path),))
    if not isinstance(data, dict):
        raise QuestionTableError(path, f"must be a mapping 'template: {{question, cloze}}', got {type(data).__name__}")
    return QuestionTable(entries={template_key(t): _entry(path, t, body) for t, body in data.items()},
                         sources=(str(path),))


@lru_cache(maxsize=1)
def builtin_question_table() -> QuestionTable:
    return load_question_table(BUILTIN_QUESTION_FORMS)


def question_table(user_path: str | Path | None = None) -> QuestionTable:
    """The table a run uses: the user's table (read and checked now) over the shipped one."""
    shipped = builtin_question_table()
    return shipped if user_path is None else load_question_table(user_path).over(shipped)
