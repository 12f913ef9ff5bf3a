"""What the shortcut battery's probes share (docs/battery.md): their settings, the "known facts"
filter, the floor/chance flag, and the names the grounded-efficacy probe reads.

Each battery probe is one file under ``probes/builtin/`` and reports to the ``battery`` table;
every metric keeps its per-record values (``Metric.records``), so the grounded-efficacy probe
can combine them record by record and ``report --compare`` can pair them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pydantic import BaseModel, ConfigDict

BATTERY_TABLE = "battery"

# (probe, metric) -> what a record must show in it for grounded efficacy (docs/battery.md):
# "hit" = the per-record value is 100 (every query of the record), "miss" = it is 0.
# The names are the battery probes' own; a part a record lacks is left out for it.
GROUNDED_PARTS: dict[tuple[str, str], str] = {
    ("negation", "PP"): "hit",
    ("paraphrase", "EM"): "hit",
    ("heldout-negation", "NPara"): "miss",
    ("question-forms", "question"): "hit",
    ("two-choice", "both"): "hit",
}


class BatteryConfig(BaseModel):
    """The battery's run settings (``battery:`` in a run config)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Score only the records whose true fact the unedited model knows (o after the edit
    # prompt, as the no-edit baseline's A.7 filter), in every battery probe.
    known_only: bool = False
    # A user YAML of question/cloze forms keyed by template, overriding the shipped table
    # (as negation_table overrides the negation rules).
    question_table: str | None = None


# A no-edit value at or below this (%) on the true fact: the probe cannot see an edit on this
# model (it is at its floor); a two-choice probe within this of 50 % is at chance.
FLOOR = 5.0
CHANCE_MARGIN = 5.0


def floor_flag(no_edit_value: float | None, chance: float | None = None) -> str | None:
    """A short note when the probe cannot speak on this model: at its floor (the unedited model
    gets the true fact almost never) or at chance; None otherwise."""
    if no_edit_value is None:
        return None
    if chance is not None and abs(no_edit_value - chance) <= CHANCE_MARGIN:
        return f"at chance: the unedited model scores {no_edit_value:.1f} on the true fact (chance {chance:.0f})"
    if no_edit_value <= FLOOR:
        return f"at its floor: the unedited model scores {no_edit_value:.1f} on the true fact"
    return None


def battery_settings(ctx) -> BatteryConfig:
    """The run's ``battery:`` settings (the defaults for a context without a run config)."""
    return getattr(ctx.config, "battery", None) or BatteryConfig()


def has_old_object(record) -> bool:
    """A declarative record with a true object o (zsRE questions have none)."""
    return not record.is_question and bool(record.target_true and record.target_true.strip())


def known_fact_ids(ctx) -> list[str] | None:
    """With ``battery.known_only``: the ids of the records whose old object o the unedited model
    exact-matches after the edit prompt (the A.7 filter of the negation baseline); None otherwise
    (every record is scored). Asked of ``ctx``'s model: call it at the baseline stage."""
    if not battery_settings(ctx).known_only:
        return None
    from .exact import exact_match_batch  # torch only when a probe measures

    rows = [r for r in ctx.records if has_old_object(r)]
    hits = exact_match_batch(ctx.model, ctx.tokenizer, [(r.query, r.target_true) for r in rows])
    return [r.id for r, hit in zip(rows, hits) if hit]


def known_records(records: Iterable, known_ids: Iterable[str] | None) -> list:
    """The records the unedited model knows when ``known_ids`` is given, else all."""
    if known_ids is None:
        return list(records)
    keep = set(known_ids)
    return [r for r in records if r.id in keep]


def per_record_hits(samples: Iterable[tuple[str, bool]]) -> dict[str, float]:
    """record id -> share of its queries that hit (0..1), from (record id, hit) pairs."""
    counts: dict[str, list[int]] = {}
    for rid, hit in samples:
        c = counts.setdefault(rid, [0, 0])
        c[0] += int(hit)
        c[1] += 1
    return {rid: hits / n for rid, (hits, n) in counts.items()}


def grounded_record(parts: Mapping[str, float], rules: Mapping[str, str]) -> bool:
    """Whether a record meets every part it has (values on the metric scale, 0..100)."""
    return all((v == 100.0) if rules[name] == "hit" else (v == 0.0) for name, v in parts.items())
