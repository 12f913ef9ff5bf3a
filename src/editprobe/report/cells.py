"""The tables' metric cells: a value column holds the point values (what tests and charts read),
and ``df.attrs["intervals"]`` holds each metric column's (lo, hi, n) per row, in row order.

Every rendering shows a metric the same way (docs/statistics.md#display):
``97.0 [93.1, 99.4]`` in Markdown, LaTeX and HTML, ``97.0 [–]`` where no interval exists (a
summary written before intervals, a corpus-level figure), ``–`` where there is no value; the
CSV gets separate columns ``<column>``, ``<column> lo``, ``<column> hi``, ``<column> n``.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..probes.base import Metric
from ..probes.intervals import shown

INTERVALS = "intervals"
Bounds = tuple[Any, Any, Any]  # (lo, hi, n)
_NONE: Bounds = (None, None, None)


def missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value))


def split_metrics(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, list[Bounds]]]:
    """Rows whose metric cells are :class:`Metric` objects -> rows of point values, and each
    metric column's (lo, hi, n) per row."""
    intervals: dict[str, list[Bounds]] = {}
    out = []
    for i, row in enumerate(rows):
        plain = {}
        for column, cell in row.items():
            if isinstance(cell, Metric):
                intervals.setdefault(column, [_NONE] * len(rows))[i] = (cell.lo, cell.hi, cell.n)
                cell = cell.value
            plain[column] = cell
        out.append(plain)
    return out, intervals


def bounds(df: pd.DataFrame, column: str, row: int) -> Bounds | None:
    """(lo, hi, n) of a metric cell (``row``: the position in the table), None for a column
    that holds no metric."""
    found = df.attrs.get(INTERVALS, {}).get(column)
    return None if found is None else found[row]


def cell_text(value: Any, interval: Bounds | None) -> str:
    """One cell as every text rendering shows it."""
    if missing(value):
        return "–"  # not applicable / not computed (or not finite), never 0
    if interval is not None:
        lo, hi, _ = interval
        return shown(float(value), None if missing(lo) else lo, None if missing(hi) else hi)
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def text_rows(df: pd.DataFrame) -> list[list[str]]:
    """Every row of ``df`` as cell texts."""
    return [[cell_text(v, bounds(df, c, i)) for c, v in zip(df.columns, row)]
            for i, row in enumerate(df.itertuples(index=False))]


def csv_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with each metric column followed by its ``lo``, ``hi`` and ``n`` columns."""
    intervals = df.attrs.get(INTERVALS, {})
    out = pd.DataFrame(index=df.index)
    for column in df.columns:
        out[column] = df[column]
        if column in intervals:
            for j, part in enumerate(("lo", "hi", "n")):
                out[f"{column} {part}"] = pd.array([b[j] for b in intervals[column]],
                                                   dtype="Int64" if part == "n" else "Float64")
    return out
