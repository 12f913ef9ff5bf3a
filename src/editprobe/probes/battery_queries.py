"""Asking the battery's queries (docs/battery.md): teacher-forced exact match of a target after
each query, asked through the editor's prompt transform, with a short greedy decode kept for
the per-sample rows; and the "known facts" every battery probe measures on the unedited model.

A query is a plain dict (JSON-able: the probes keep them in their stage states): ``record_id``,
``setting``, ``query``, ``expected``, plus whatever the probe needs to pair queries (``key``);
:func:`ask` adds ``match`` and ``generated``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from .base import ProbeContext
from .battery import battery_settings, has_old_object, known_records
from .exact import match_and_decode
from .negation import DECODE_EXTRA

Query = dict[str, Any]
KNOWN = "known"  # the setting of the edit prompt asked with o on the unedited model


def ask(ctx: ProbeContext, queries: Sequence[Query]) -> list[Query]:
    """Each query with ``match`` (teacher-forced exact match of ``expected``) and ``generated``
    (greedy, len(target) + a few tokens), in one batched pass per query."""
    if not queries:
        return []
    pairs = [(ctx.transform.completion(q["query"]), q["expected"]) for q in queries]
    matches, decoded = match_and_decode(ctx.model, ctx.tokenizer, pairs, DECODE_EXTRA)
    assert decoded is not None
    return [{**q, "match": bool(m), "generated": d.text} for q, m, d in zip(queries, matches, decoded)]


def known_queries(records: Iterable) -> list[Query]:
    """The edit prompt with o, per record that has one (the A.7 filter's query)."""
    return [{"record_id": r.id, "setting": KNOWN, "query": r.query, "expected": r.target_true}
            for r in records if has_old_object(r)]


def known_only(ctx: ProbeContext) -> bool:
    return battery_settings(ctx).known_only


def known_ids(asked: Iterable[Query]) -> list[str]:
    return [q["record_id"] for q in asked if q["setting"] == KNOWN and q["match"]]


def known_at(ctx: ProbeContext, stage: str, baseline: dict[str, Any] | None) -> tuple[list[Query], list[str], list]:
    """The A.7 filter as these probes keep it: at the baseline the edit prompt asked with o (the
    asked rows: samples, and the floor flag's basis) and the ids it hits; at an edit stage the
    ids the baseline stored (``known_ids``). With the records to score: those ids under
    ``battery.known_only``, else every record."""
    known: list[Query] = []
    if stage == "baseline":
        known = ask(ctx, known_queries(ctx.records))
        ids = known_ids(known)
    else:
        ids = (baseline or {}).get("known_ids", [])
    records = known_records(ctx.records, ids) if known_only(ctx) else list(ctx.records)
    return known, ids, records


def known_share(asked: Sequence[Query]) -> tuple[float | None, int]:
    """(% of records with an old object whose o follows the edit prompt, their number)."""
    known = [q for q in asked if q["setting"] == KNOWN]
    return (round(100.0 * sum(q["match"] for q in known) / len(known), 1) if known else None), len(known)


def sample_rows(asked: Iterable[Query], probe: str, edited_with: str) -> list[dict[str, Any]]:
    """Per-sample rows for samples.jsonl, as the other probes write them."""
    return [{"edited_with": edited_with, "record_id": q["record_id"], "setting": q["setting"], "probe": probe,
             "query": q["query"], "expected": q["expected"], "generated": q["generated"], "match": q["match"]}
            for q in asked]
