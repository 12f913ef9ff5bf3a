"""JSON that every parser reads: a NaN or an infinity (a metric of a model that returned NaN,
a perplexity that overflowed) is written as ``null`` with one warning naming the file and
the fields, never as Python's non-standard ``NaN``/``Infinity``. Tables show null as "–"."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

from .errors import EditprobeWarning

SHOWN_FIELDS = 5  # a warning names this many fields, then counts the rest


class NonFiniteWarning(EditprobeWarning):
    """Non-finite numbers were written to a JSON file as null."""


def finite(obj: Any, where: str | Path | None = None) -> Any:
    """``obj`` with every non-finite float replaced by None (tuples become lists, as JSON
    writes them). With ``where`` (the file), one warning names it and the fields, as dotted
    paths (``results.0.probes.perplexity.metrics.ppl.value``)."""
    found: list[str] = []
    clean = _clean(obj, "", found)
    if found and where is not None:
        shown = ", ".join(found[:SHOWN_FIELDS]) + (f" and {len(found) - SHOWN_FIELDS} more"
                                                  if len(found) > SHOWN_FIELDS else "")
        count = "1 number" if len(found) == 1 else f"{len(found)} numbers"
        warnings.warn(NonFiniteWarning(f"{where}: {count} not finite (NaN or infinity), written as null: {shown}"),
                      stacklevel=2)
    return clean


def dumps(obj: Any, where: str | Path | None = None, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj, where)``; always valid JSON."""
    return json.dumps(finite(obj, where), allow_nan=False, **kwargs)


def number(value: float | None) -> float:
    """A number read back from a file this module wrote: null is the NaN it stood for."""
    return math.nan if value is None else value


def _clean(value: Any, at: str, found: list[str]) -> Any:
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        found.append(at or "(the value)")
        return None
    if isinstance(value, dict):
        return {k: _clean(v, f"{at}.{k}" if at else str(k), found) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v, f"{at}.{i}" if at else str(i), found) for i, v in enumerate(value)]
    return value
