"""The edit plan of a dataset (docs/protocol.md#negated-queries): which records take part in the
negation settings, with the negated template of each, and which cannot (count + reasons).

``build_negation_plan(records)`` negates every record's template and yields the positive
requests (p, s, o*) and the negative requests (neg(p), s, o*); records whose template cannot
be negated are excluded and reported, never kept positive. It is records × negation, so it
lives with the data; the probes score what it plans (probes/negation.py).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from .negation import RECORD_UNANCHORED_RULE, Negation, negated_query, record_negation
from .records import EditRecord, EditRequest

__all__ = ["ExcludedRecord", "NegateFn", "NegationItem", "NegationPlan", "build_negation_plan"]

# A negation function: (template, relation_id) -> Negation. A plain string (the negated
# template) or None (cannot negate) is accepted too, for quick user-supplied functions.
NegateFn = Callable[[str, str | None], "Negation | str | None"]


class ExcludedRecord(BaseModel):
    """A record left out of the negation settings, and why."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    template: str
    relation_id: str | None
    rule: str
    reason: str


class NegationItem(BaseModel):
    """A record with its negated template; both requests share subject and target o*."""

    model_config = ConfigDict(frozen=True)

    record: EditRecord
    negation: Negation

    @property
    def negated_template(self) -> str:
        assert self.negation.negated is not None  # guaranteed by build_negation_plan
        return self.negation.negated

    @property
    def editable(self) -> bool:
        """Whether the negated query can be an edit request: a record's own negated prompt
        that does not hold the subject can be asked, not edited (locate-then-edit methods
        edit at the subject's last token)."""
        return self.negation.rule != RECORD_UNANCHORED_RULE

    @property
    def negation_source(self) -> str:
        """Where the negated query comes from: "record" (the record's own), else the rules'
        family ("user-table", "relation-table", "aux-insert", ...)."""
        return "record" if self.negation.rule_family.startswith("record") else self.negation.rule_family

    def query(self, kind: str) -> str:
        if kind == "positive":
            return self.record.query
        return negated_query(self.negation, self.record.subject)

    def request(self, kind: str) -> EditRequest:
        positive = self.record.template
        negated = self.negated_template if self.editable else None
        if kind == "positive":
            return self.record.request(template=positive, opposite_template=negated)
        if negated is None:
            raise ValueError(f"record {self.record.id}: its negated prompt does not hold the subject: it cannot be "
                             "an edit request")
        return self.record.request(template=negated, opposite_template=positive)


class NegationPlan(BaseModel):
    """The records that take part in the negation settings, and those that cannot."""

    model_config = ConfigDict(frozen=True)

    items: tuple[NegationItem, ...]
    excluded: tuple[ExcludedRecord, ...]

    @property
    def n_records(self) -> int:
        return len(self.items)

    @property
    def n_excluded(self) -> int:
        return len(self.excluded)

    @property
    def record_ids(self) -> tuple[str, ...]:
        return tuple(item.record.id for item in self.items)

    def positive_requests(self) -> list[EditRequest]:
        return [item.request("positive") for item in self.items]

    def requests_for(self, records: Sequence[EditRecord]) -> list[EditRequest]:
        """Positive requests of ``records`` in order — also of those the negation settings
        leave out (they keep their other probes): a kept record's request carries its
        opposite query, another record's none."""
        items = {item.record.id: item for item in self.items}
        return [items[r.id].request("positive") if r.id in items else r.request() for r in records]

    def negative_requests(self) -> list[EditRequest]:
        """The negated edits: of every record whose negated query can be edited."""
        return [item.request("negative") for item in self.negative_items]

    @property
    def negative_items(self) -> tuple[NegationItem, ...]:
        """The records a negative run edits (and NN/NP score): those with an editable negated query."""
        return tuple(item for item in self.items if item.editable)

    @property
    def n_not_editable(self) -> int:
        """Records whose own negated prompt lacks the subject: PN asked, no negated edit."""
        return sum(not item.editable for item in self.items)

    def source_counts(self) -> dict[str, int]:
        """Records per source of their negated query: {"record": 1990, "aux-insert": 10}."""
        return dict(Counter(item.negation_source for item in self.items).most_common())

    def rule_counts(self) -> dict[str, int]:
        """Records per negation rule family, e.g. {"relation-table": 80, "aux-insert": 12}."""
        return dict(Counter(item.negation.rule_family for item in self.items).most_common())

    def summary(self, examples: int = 5) -> str:
        total = self.n_records + self.n_excluded
        lines = [f"negation settings: {self.n_records}/{total} records kept, {self.n_excluded} excluded"]
        lines += [f"  {rule}: {n}" for rule, n in self.rule_counts().items()]
        lines += [f"  excluded {e.record_id}: {e.template!r} ({e.reason})" for e in self.excluded[:examples]]
        return "\n".join(lines)


def _problem(negation: Negation) -> str | None:
    """Why a negation cannot be used, or None. Checked here too because a user function
    may return anything."""
    if not negation.ok or negation.negated is None:
        return negation.reason or "no rule could negate the template"
    if negation.rule == RECORD_UNANCHORED_RULE:
        return None  # asked as it is (NegationItem.editable)
    if negation.negated.count("{}") != 1:
        return f"the negated template {negation.negated!r} must contain exactly one '{{}}'"
    if " ".join(negation.negated.split()) == " ".join(negation.template.split()):
        return "the negated template equals the template"
    return None


def build_negation_plan(records: Iterable[EditRecord], negate_fn: NegateFn | None = None) -> NegationPlan:
    """Negate each record (its own negated prompt when it carries one, else ``negate_fn`` or
    ``negate`` of data/negation.py: user table, curated relation table, grammar rules) and
    split the records into kept and excluded."""
    items: list[NegationItem] = []
    excluded: list[ExcludedRecord] = []
    for record in records:
        negation = record_negation(record, negate_fn)
        problem = _problem(negation)
        if problem is None:
            items.append(NegationItem(record=record, negation=negation))
        else:
            excluded.append(ExcludedRecord(record_id=record.id, template=record.template,
                                           relation_id=record.relation_id, rule=negation.rule, reason=problem))
    return NegationPlan(items=tuple(items), excluded=tuple(excluded))
