"""How far a file's own negated prompts agree with editprobe's negation rules
(``editprobe data negate FILE --compare``).

Each record that carries its own negated prompt is compared with the rules' negation of its
template, subject filled in: *identical* (up to runs of whitespace), *contraction only*
(equal once "isn't", "doesn't", "can't" ... are written out), *different*, or *not
negatable* (no rule negates the template; the record's own prompt is then the only one).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from pydantic import BaseModel, ConfigDict, Field

from .negation import negate
from .records import EditRecord

CATEGORIES = ("identical", "contraction only", "different", "not negatable")
_CONTRACTIONS = {"can't": "can not", "cannot": "can not", "won't": "will not", "shan't": "shall not",
                 "ain't": "is not"}
_NT = re.compile(r"\b(\w+)n't\b", re.IGNORECASE)


def _words(text: str) -> str:
    return " ".join(text.split())


def _expanded(text: str) -> str:
    text = _words(text).lower()
    for short, long in _CONTRACTIONS.items():
        text = re.sub(rf"\b{re.escape(short)}\b", long, text)
    return _NT.sub(r"\1 not", text)


class Example(BaseModel):
    model_config = ConfigDict(frozen=True)

    record_id: str
    own: str
    rules: str | None


class NegationComparison(BaseModel):
    """Counts per category (:data:`CATEGORIES`), the first examples of each, and how many
    records carry no negated prompt of their own."""

    model_config = ConfigDict(frozen=True)

    counts: dict[str, int]
    examples: dict[str, list[Example]] = Field(default_factory=dict)
    n_without: int = 0

    @property
    def n_compared(self) -> int:
        return sum(self.counts.values())

    def share(self, category: str) -> float:
        return 100.0 * self.counts.get(category, 0) / self.n_compared if self.n_compared else 0.0


def category(own: str, rules: str | None) -> str:
    if rules is None:
        return "not negatable"
    if _words(own) == _words(rules):
        return "identical"
    if _expanded(own) == _expanded(rules):
        return "contraction only"
    return "different"


def compare_negations(records: Iterable[EditRecord], negate_fn: Callable | None = None,
                      examples: int = 3) -> NegationComparison:
    """Compare every record's own negated prompt with the rules' (``negate_fn``: a user
    table over the rules; default :func:`negate`)."""
    fn = negate_fn or negate
    counts = {c: 0 for c in CATEGORIES}
    shown: dict[str, list[Example]] = {c: [] for c in CATEGORIES}
    n_without = 0
    for record in records:
        if not record.negated_prompt:
            n_without += 1
            continue
        negation = fn(record.template, record.relation_id)
        negated = getattr(negation, "negated", negation)
        rules = negated.format(record.subject) if negated else None
        found = category(record.negated_prompt, rules)
        counts[found] += 1
        if len(shown[found]) < examples:
            shown[found].append(Example(record_id=record.id, own=record.negated_prompt, rules=rules))
    return NegationComparison(counts=counts, examples={c: v for c, v in shown.items() if v}, n_without=n_without)
