"""``negate(template)``: the negated prompt of docs/protocol.md#negating-a-template, with its provenance.

Precedence, highest first: a user table (template -> negated, ``load_negation_table``),
the curated per-relation table shipped in ``builtin/negation_relations.yaml``, the grammar
rules of ``negation_rules``. A template none of them can negate comes back with
``ok=False`` and rule "unnegatable" (``negated`` is None, so it can never be used as if it
were negated); ``negate_all`` counts and lists those.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import quoted
from ..yamlio import YAMLInputError, load_yaml
from .errors import DataError
from .placeholders import one_subject_slot
from .negation_rules import PLACEHOLDER, negate_by_rules

BUILTIN_RELATIONS = Path(__file__).resolve().parent / "builtin" / "negation_relations.yaml"


class NegationTableError(DataError):
    """A bad negation table; ``str(err)`` names the file and the offending entry."""

    def __init__(self, path: str | Path | None, message: str, entry: str | None = None):
        self.entry = entry
        super().__init__(path, f"entry {quoted(entry)}: {message}" if entry is not None else message)


class Negation(BaseModel):
    """The negation of one template; ``negated`` is None exactly when ``ok`` is False.

    ``rule`` is "family:detail". Families: "user-table", "relation-table:P103",
    "relation-pattern:P103", "aux-insert:is", "do-support:plays->does not play",
    "participle-insert:developed" ("{}, not developed by"), for questions
    "question-aux:does" (inverted: "does {} not belong"), "question-aux-insert:is"
    (declarative order: "The director of {} is not who?"), "question-do-support:...",
    and "unnegatable" (``reason`` says why)."""

    model_config = ConfigDict(frozen=True)

    template: str
    negated: str | None
    rule: str
    ok: bool
    reason: str = ""

    @model_validator(mode="after")
    def _ok_iff_negated(self) -> "Negation":
        if self.ok != (self.negated is not None):
            raise ValueError("ok must be True exactly when there is a negated template")
        return self

    @property
    def rule_family(self) -> str:
        return self.rule.split(":", 1)[0]


def template_key(template: str) -> str:
    """Lookup key: tables (negation, question forms) match templates up to runs of whitespace."""
    return " ".join(template.split())



def _check_pair(template: Any, negated: Any, path: str | Path | None, where: str) -> None:
    entry = f"{where}{template}" if isinstance(template, str) else f"{where}{quoted(template)}"
    if not isinstance(template, str) or not isinstance(negated, str):
        raise NegationTableError(path, "template and negation must both be strings", entry)
    for side, text in (("template", template), ("negation", negated)):
        try:
            one_subject_slot(text)  # a "{x}" or a lone brace would fail only when the run negates
        except ValueError as exc:
            raise NegationTableError(path, f"the {side} {exc}", entry) from None
    if template_key(template) == template_key(negated):
        raise NegationTableError(path, "the negation is the template unchanged", entry)


class NegationTable(BaseModel):
    """A user table: template -> negated template. Overrides everything else."""

    model_config = ConfigDict(frozen=True)

    entries: dict[str, str] = Field(default_factory=dict)
    source: str | None = None

    @classmethod
    def from_mapping(cls, mapping: Mapping[Any, Any], source: str | Path | None = None) -> "NegationTable":
        for template, negated in mapping.items():
            _check_pair(template, negated, source, "")
        return cls(entries={template_key(t): n for t, n in mapping.items()}, source=str(source) if source else None)

    def get(self, template: str) -> str | None:
        return self.entries.get(template_key(template))


def read_table_yaml(path: str | Path, error: Callable[[str | Path, str], Exception] | None = None) -> Any:
    """A user table's YAML, any failure as one ``error(path, reason)`` (a negation table's
    by default; the question-forms table passes its own)."""
    error = error or NegationTableError
    try:
        return load_yaml(Path(path))
    except OSError as err:
        raise error(path, f"cannot read: {err.strerror or err}") from err
    except YAMLInputError as err:
        raise error(path, str(err)) from None
    except yaml.YAMLError as err:
        raise error(path, f"not valid YAML: {err}") from err



def load_negation_table(path: str | Path) -> NegationTable:
    """Read a user YAML table, a mapping ``template: negated``; every entry is checked
    (strings, exactly one "{}" on each side, the negation differs from the template)."""
    data = read_table_yaml(path)
    if data is None:
        return NegationTable(source=str(path))
    if not isinstance(data, dict):
        raise NegationTableError(path, f"must be a mapping 'template: negated template', got {type(data).__name__}")
    return NegationTable.from_mapping(data, source=path)


class RelationPattern(BaseModel):
    """A regex rule for templates of one relation that are not listed literally."""

    model_config = ConfigDict(frozen=True)

    match: str  # re.fullmatch against the template
    replace: str  # re.Match.expand() template

    def apply(self, template: str) -> str | None:
        m = re.fullmatch(self.match, template)
        return m.expand(self.replace) if m else None


class RelationEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str = ""
    templates: dict[str, str] = Field(default_factory=dict)
    patterns: tuple[RelationPattern, ...] = ()


class RelationTable(BaseModel):
    """relation_id -> curated negations of that relation's templates."""

    model_config = ConfigDict(frozen=True)

    relations: dict[str, RelationEntry] = Field(default_factory=dict)
    source: str | None = None

    def lookup(self, template: str, relation_id: str | None) -> tuple[str, str] | None:
        """(negated, rule) from the table, or None. A template listed under another
        relation is used too: negation depends on the wording, not on the relation."""
        key = template_key(template)
        entry = self.relations.get(relation_id) if relation_id else None
        if entry is not None:
            if key in entry.templates:
                return entry.templates[key], f"relation-table:{relation_id}"
            for pattern in entry.patterns:
                negated = pattern.apply(template)
                if negated is not None:
                    _check_pair(template, negated, self.source, f"{relation_id} pattern {pattern.match!r}: ")
                    return negated, f"relation-pattern:{relation_id}"
        for rid, other in self.relations.items():
            if key in other.templates:
                return other.templates[key], f"relation-table:{rid}"
        return None


def load_relation_table(path: str | Path) -> RelationTable:
    """Read a per-relation YAML table (the format of ``builtin/negation_relations.yaml``)."""
    data = read_table_yaml(path)
    if not isinstance(data, dict):
        raise NegationTableError(path, "must be a mapping 'relation_id: {name, templates, patterns}'")
    relations: dict[str, RelationEntry] = {}
    for rid, body in data.items():
        if not isinstance(body, dict) or not isinstance(body.get("templates", {}), dict):
            raise NegationTableError(path, "must be a mapping with a 'templates' mapping", str(rid))
        unknown = set(body) - {"name", "templates", "patterns"}
        if unknown:
            raise NegationTableError(path, f"unknown keys {sorted(unknown)}", str(rid))
        templates = body.get("templates") or {}
        for template, negated in templates.items():
            _check_pair(template, negated, path, f"{rid}: ")
        patterns = []
        for item in body.get("patterns") or ():
            if not isinstance(item, dict) or set(item) != {"match", "replace"}:
                raise NegationTableError(path, "a pattern needs exactly 'match' and 'replace'", str(rid))
            try:
                re.compile(item["match"])
            except re.error as err:
                raise NegationTableError(path, f"bad regex {quoted(item['match'])}: {err}", str(rid)) from err
            patterns.append(RelationPattern(match=item["match"], replace=item["replace"]))
        relations[str(rid)] = RelationEntry(
            name=str(body.get("name", "")),
            templates={template_key(t): n for t, n in templates.items()},
            patterns=tuple(patterns),
        )
    return RelationTable(relations=relations, source=str(path))


@lru_cache(maxsize=1)
def builtin_relation_table() -> RelationTable:
    return load_relation_table(BUILTIN_RELATIONS)


def negate(
    template: str,
    relation_id: str | None = None,
    overrides: NegationTable | None = None,
    relations: RelationTable | None = None,
) -> Negation:
    """Negate a prompt template holding exactly one "{}" (the subject).

    ``relations`` replaces the built-in per-relation table (tests, experiments)."""
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"a template must contain exactly one '{{}}': {template!r}")
    if overrides is not None and (negated := overrides.get(template)) is not None:
        return Negation(template=template, negated=negated, rule="user-table", ok=True)
    table = builtin_relation_table() if relations is None else relations
    found = table.lookup(template, relation_id)
    if found is not None:
        return Negation(template=template, negated=found[0], rule=found[1], ok=True)
    result = negate_by_rules(template)
    return Negation(template=template, negated=result.negated, rule=result.rule, ok=result.ok, reason=result.reason)


# Rule of a negation a record carries itself; "record-unanchored" when its negated prompt does
# not hold the subject exactly once, so it can be asked but not edited by a locate-then-edit
# method (which needs the subject's last token in the prompt).
RECORD_RULE = "record"
RECORD_UNANCHORED_RULE = "record-unanchored"


def record_negation(record, negate_fn=None) -> "Negation":
    """The negation of a record's query: its own negated prompt when it carries one (rule
    "record": the prompt with the subject turned back into "{}"; "record-unanchored" when
    the subject does not occur in it exactly once: then ``negated`` is the filled query
    itself, with no "{}"), else ``negate_fn(template, relation_id)`` (default :func:`negate`:
    a user table, the relation table, the grammar rules)."""
    if record.negated_prompt:
        own = record.negated_prompt
        if own.count(record.subject) == 1:
            template = own.replace("{", "{{").replace("}", "}}").replace(record.subject, PLACEHOLDER)
            if template.count(PLACEHOLDER) == 1 and "{{" not in template and "}}" not in template:
                return Negation(template=record.template, negated=template, rule=RECORD_RULE, ok=True)
        return Negation(template=record.template, negated=own, rule=RECORD_UNANCHORED_RULE, ok=True)
    fn = negate_fn or negate
    result = fn(record.template, record.relation_id)
    return result if isinstance(result, Negation) else _from_function(record.template, result)


def _from_function(template: str, result) -> "Negation":
    """A user function's plain answer: the negated template, or None (cannot negate)."""
    if result is None:
        return Negation(template=template, negated=None, rule="unnegatable", ok=False,
                        reason="the negation function returned None")
    return Negation(template=template, negated=result, rule="custom-function", ok=True)


def negation_function(table_path: str | Path | None):
    """The negation a job uses: :func:`negate`, with the user table at ``table_path`` (read
    and checked now) over the rules; None without a table (the default)."""
    if table_path is None:
        return None
    table = load_negation_table(table_path)
    return lambda template, relation_id: negate(template, relation_id, overrides=table)


def with_opposite(record, negate_fn=None):
    """The record's edit request carrying its opposite-polarity query (its own negated
    prompt, else the negation of its template), which negation-aware editors use."""
    negation = record_negation(record, negate_fn)
    usable = negation.ok and negation.rule != RECORD_UNANCHORED_RULE and negation.negated.count(PLACEHOLDER) == 1
    return record.request(opposite_template=negation.negated if usable else None)


def negated_query(negation: "Negation", subject: str) -> str:
    """The negated query asked for a record: its negated template with the subject, or (a
    record's unanchored negated prompt) the prompt as it is."""
    assert negation.negated is not None
    if negation.rule == RECORD_UNANCHORED_RULE:
        return negation.negated
    return negation.negated.format(subject)


class NegationReport(BaseModel):
    """Negations of distinct (template, relation_id) pairs, in first-seen order."""

    model_config = ConfigDict(frozen=True)

    results: tuple[Negation, ...]

    @property
    def total(self) -> int:
        return len(self.results)

    @property
    def n_ok(self) -> int:
        return sum(r.ok for r in self.results)

    @property
    def coverage(self) -> float:
        return self.n_ok / self.total if self.total else 1.0

    @property
    def counts(self) -> dict[str, int]:
        """Templates per rule, e.g. {"aux-insert:is": 40, "unnegatable": 2}."""
        return dict(Counter(r.rule for r in self.results).most_common())

    @property
    def family_counts(self) -> dict[str, int]:
        """Templates per rule family, e.g. {"aux-insert": 55, "do-support": 12}."""
        return dict(Counter(r.rule_family for r in self.results).most_common())

    @property
    def failures(self) -> tuple[Negation, ...]:
        return tuple(r for r in self.results if not r.ok)

    def mapping(self) -> dict[str, str]:
        """template -> negated, for the templates that were negated."""
        return {r.template: r.negated for r in self.results if r.negated is not None}

    def summary(self, examples: int = 5) -> str:
        lines = [f"negated {self.n_ok}/{self.total} templates ({100 * self.coverage:.1f}%)"]
        lines += [f"  {family}: {n}" for family, n in self.family_counts.items()]
        if self.failures:
            lines.append(f"unnegatable: {len(self.failures)}, e.g.:")
            lines += [f"  {f.template!r} ({f.reason})" for f in self.failures[:examples]]
        return "\n".join(lines)


def negate_all(
    templates: Iterable[str | tuple[str, str | None]],
    overrides: NegationTable | None = None,
    relations: RelationTable | None = None,
) -> NegationReport:
    """Negate many templates; an item is a template or a (template, relation_id) pair.
    Duplicates are negated and counted once."""
    seen: dict[tuple[str, str | None], Negation] = {}
    for item in templates:
        template, rid = (item, None) if isinstance(item, str) else item
        if (template, rid) not in seen:
            seen[(template, rid)] = negate(template, rid, overrides=overrides, relations=relations)
    return NegationReport(results=tuple(seen.values()))
