"""Suspicious but valid data: worth one warning with a count, never an error.

- a record whose ``target_new`` equals its ``target_true``: editing it changes nothing, and
  it scores as an edit success that is none;
- duplicate cases: the same (subject, prompt, target) under different ids, which weighs that
  fact twice in every average.
"""

from __future__ import annotations

from collections.abc import Sequence

from .records import EditRecord


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def suspicious_records(records: Sequence[EditRecord], source: str) -> list[str]:
    """One warning line per kind of problem found in ``records`` (from ``source``)."""
    warnings = []
    same = [r.id for r in records if r.target_true is not None and _norm(r.target_new) == _norm(r.target_true)]
    if same:
        warnings.append(f"{source}: {len(same)} of {len(records)} records have target_new equal to target_true "
                        f"(first: id {same[0]}); editing them changes nothing and they count as successes")
    seen: dict[tuple[str, str, str], str] = {}
    duplicates = []
    for r in records:
        key = (_norm(r.subject), _norm(r.template), _norm(r.target_new))
        if key in seen:
            duplicates.append((r.id, seen[key]))
        else:
            seen[key] = r.id
    if duplicates:
        first, of = duplicates[0]
        warnings.append(f"{source}: {len(duplicates)} records repeat an earlier record's subject, prompt and target "
                        f"(first: id {first} repeats id {of}); each repeat weighs that fact twice")
    return warnings
