"""What a dataset format is: a content detector plus a converter to EditRecords."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...registry import Registry
from ..fields import RawEntry
from ..records import EditRecord


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format.

    ``matches(raw)`` looks at the keys of one raw JSON object and says whether it has this
    format's shape (detection votes over the first records, so it should be cheap and
    structural). ``convert(entry, index)`` turns one raw object into one or more records
    (MQuAKE: one per requested rewrite), raising ``FieldError`` for bad fields.
    """

    name: str
    description: str
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[RawEntry, int], list[EditRecord]]


def record_id(entry: RawEntry, index: int) -> str:
    """``case_id`` or ``id`` when the file has one, else the record's position."""
    for key in ("case_id", "id"):
        found = entry.identifier(key)
        if found is not None:
            return found
    return str(index)


def is_question(prompt: str) -> bool:
    return prompt.rstrip().endswith("?")


# name -> format, in detection order (see formats/__init__.py).
DATASET_FORMATS: Registry[DatasetFormat] = Registry("dataset format", key=lambda fmt: fmt.name)


def register_format(fmt: DatasetFormat, *, first: bool = True, replace: bool = False) -> DatasetFormat:
    """Add a format. ``first``: try it before the built-in ones during detection, since a
    user's format is usually more specific than the generic built-in shapes."""
    return DATASET_FORMATS.register(fmt, first=first, replace=replace)
