"""The registry of dataset formats, in detection order (most specific first)."""

from __future__ import annotations

from . import counterfact, easyedit, knowedit, mquake, zsre
from .base import DatasetFormat, is_question, record_id

# name -> format. Detection tries them in this order, so a generic shape (easyedit:
# prompt/subject/target_new) comes after the shapes that have distinctive keys.
DATASET_FORMATS: dict[str, DatasetFormat] = {
    fmt.name: fmt for fmt in (mquake.FORMAT, counterfact.FORMAT, zsre.FORMAT, knowedit.FORMAT, easyedit.FORMAT)
}


def register_format(fmt: DatasetFormat, *, first: bool = True) -> None:
    """Add (or replace) a format. ``first``: try it before the built-in ones during detection,
    since a user's format is usually more specific than the generic built-in shapes."""
    others = {name: f for name, f in DATASET_FORMATS.items() if name != fmt.name}
    DATASET_FORMATS.clear()
    if first:
        DATASET_FORMATS[fmt.name] = fmt
    DATASET_FORMATS.update(others)
    if not first:
        DATASET_FORMATS[fmt.name] = fmt


__all__ = ["DATASET_FORMATS", "DatasetFormat", "is_question", "record_id", "register_format"]
