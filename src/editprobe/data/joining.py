"""Several files as one dataset: ``test_cf.json+train_cf.json`` (the paper's WikiData-
Counterfact file is KnowEdit's test split followed by its train split). The files are read
in order under one key; ``n`` counts across them. Record ids stay unique: when two files
use the same id, every record's id is prefixed with its file's stem (``train_cf/12``)."""

from __future__ import annotations

from pathlib import Path

from .builtin_data import BUILTIN_DATASETS

JOIN = "+"


def joined_parts(spec: str | Path) -> list[str] | None:
    """The files a spec joins, or None when it names one file (an existing file whose name
    holds a "+" is one file)."""
    text = str(spec)
    if JOIN not in text or Path(text).expanduser().exists() or text in BUILTIN_DATASETS:
        return None
    parts = [part.strip() for part in text.split(JOIN)]
    return parts if all(parts) else None


def unique_ids(parts: list[tuple[str, list]]) -> list:
    """The records of every part, ids prefixed with the part's stem when two parts share an id."""
    seen: set[str] = set()
    clash = False
    for _, records in parts:
        ids = {r.id for r in records}
        clash = clash or bool(ids & seen)
        seen |= ids
    if not clash:
        return [r for _, records in parts for r in records]
    return [r.model_copy(update={"id": f"{Path(spec).stem}/{r.id}",
                                 "case_id": f"{Path(spec).stem}/{r.case_id}" if r.case_id else None})
            for spec, records in parts for r in records]
