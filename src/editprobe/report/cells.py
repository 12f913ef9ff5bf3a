"""The tables' metric cells: a value column holds the point values (what tests and charts read),
and ``df.attrs["intervals"]`` holds each metric column's (lo, hi, n) per row, in row order.

Every rendering shows a metric the same way (docs/statistics.md#display):
``97.0 [93.1, 99.4]`` in Markdown, LaTeX and HTML, ``97.0 [–]`` where no interval exists (a
summary written before intervals, a corpus-level figure), ``–`` where there is no value; the
CSV gets separate columns ``<column>``, ``<column> lo``, ``<column> hi``, ``<column> n``.

A metric cell that is a share of records (k of n, in %) also keeps its count
(``df.attrs["counts"]``: column -> (k, n) or None per row), which the HTML report prints beside
the percentage ("83.3 [43.6, 97.0]" over "5/6"); the CSV already has ``<column> n``.

A cell may carry a mark (``df.attrs["marks"]``: per row, column -> mark), appended to its text:
``†`` where the row's editor trained on the query form the column asks (docs/battery.md#trained-forms),
``‡`` where the probe is at its floor or at chance on the model. The notes that explain them
(``df.attrs["notes"]``) go under the table; the CSV gets one column per mark naming the marked
columns of each row (``trained on``, ``flagged``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..probes.base import Metric
from ..probes.intervals import shown, wilson

INTERVALS = "intervals"
COUNTS = "counts"
NO_EDIT = "No edit"  # the unedited model's row in every table
MARKS_KEY = "_marks"  # a row's marked cells (column -> mark), taken off by table_frame
MARKS, NOTES = "marks", "notes"
TRAINED_MARK, FLAG_MARK = "†", "‡"
TRAINED_NOTE = (f"{TRAINED_MARK} the editor trained on the query form this column asks: a training objective read "
                "back, not held-out evidence")
# The CSV column per mark: the row's marked columns.
MARK_COLUMNS = {TRAINED_MARK: "trained on", FLAG_MARK: "flagged"}
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


def share_count(metric: Metric) -> tuple[int, int] | None:
    """(k, n) where ``metric`` is k of n records in %: its value is 100·k/n at one decimal and
    its interval, where it has one, is the Wilson interval of k/n (a mean of per-record values
    that happens to equal some k/n has a bootstrap interval, so it gets no count)."""
    n, value = metric.n, metric.value
    if metric.unit != "%" or not n or n < 0 or value is None or not math.isfinite(value):
        return None
    k = round(value * n / 100)
    if not 0 <= k <= n or abs(100 * k / n - value) > 0.051:
        return None
    if metric.lo is None or metric.hi is None:
        return k, n
    found = wilson(k, n)
    return (k, n) if found and abs(found[0] - metric.lo) < 0.051 and abs(found[1] - metric.hi) < 0.051 else None


def share_counts(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, int] | None]]:
    """Each metric column's (k, n) per row (:func:`share_count`), for rows of Metric cells."""
    counts: dict[str, list[tuple[int, int] | None]] = {}
    for i, row in enumerate(rows):
        for column, cell in row.items():
            if isinstance(cell, Metric) and (found := share_count(cell)) is not None:
                counts.setdefault(column, [None] * len(rows))[i] = found
    return counts


def count(df: pd.DataFrame, column: str, row: int) -> tuple[int, int] | None:
    """(k, n) of a cell that is a share of records (``row``: the position in the table)."""
    found = df.attrs.get(COUNTS, {}).get(column)
    return None if found is None else found[row]


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


def mark(df: pd.DataFrame, column: str, row: int) -> str:
    """The cell's marks ("" for none; ``row``: the position in the table)."""
    marks = df.attrs.get(MARKS)
    return marks[row].get(column, "") if marks else ""


def notes(df: pd.DataFrame) -> list[str]:
    """The lines under the table that explain its marks (none for a table without marks)."""
    return list(df.attrs.get(NOTES) or [])


def set_marks(df: pd.DataFrame, marks: list[dict[str, str]], extra_notes: list[str] | None = None) -> None:
    """Put the rows' marks (in row order) and their notes on ``df``: nothing when no cell is
    marked, so a table without marks renders as it always did."""
    kept = [{c: m for c, m in row.items() if c in df.columns} for row in marks]
    if any(kept):
        df.attrs[MARKS] = kept
    found = {m for row in kept for text in row.values() for m in text}
    lines = ([TRAINED_NOTE] if TRAINED_MARK in found else []) + list(extra_notes or [])
    if lines:
        df.attrs[NOTES] = lines


def text_rows(df: pd.DataFrame) -> list[list[str]]:
    """Every row of ``df`` as cell texts (a marked cell that has a value: its marks appended)."""
    return [[cell_text(v, bounds(df, c, i)) + ("" if missing(v) else mark(df, c, i)) for c, v in zip(df.columns, row)]
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
    marks = df.attrs.get(MARKS) or []
    for symbol, name in MARK_COLUMNS.items():
        if any(symbol in m for row in marks for m in row.values()):
            out[name] = ["; ".join(c for c in df.columns if symbol in row.get(c, "") and not missing(df[c].iloc[i]))
                         for i, row in enumerate(marks)]
    return out


def trained_marks(result: Any, probe: str, columns: dict[str, str] | None = None) -> dict[str, str]:
    """The cells of ``probe`` in a result row (runs/summary.py ResultRow) whose metric asks a form
    the row's editor trained on (column -> the mark); ``columns``: metric key -> column, where
    they differ."""
    return {(columns or {}).get(key, key): TRAINED_MARK for key in result.trained_cells.get(probe, ())}


def table_frame(rows: list[dict[str, Any]], columns: Sequence[str], counts: Sequence[str] = (),
                extra_notes: list[str] | None = None) -> pd.DataFrame:
    """The rows as a table of ``columns``: metric cells split into values and intervals, the
    ``counts`` columns kept integers, each row's marks (``MARKS_KEY``) and ``extra_notes`` put
    on it (:func:`set_marks`)."""
    marks = [row.pop(MARKS_KEY, None) or {} for row in rows]
    shares = share_counts(rows)
    # An infinity (in a summary written before non-finite numbers became null) is no number either.
    rows, intervals = split_metrics(rows)
    rows = [{k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()} for row in rows]
    df = pd.DataFrame(rows, columns=list(columns))
    df.attrs[INTERVALS] = {c: v for c, v in intervals.items() if c in df.columns}
    df.attrs[COUNTS] = {c: v for c, v in shares.items() if c in df.columns}
    for count in counts:  # counts stay integers even where a row has none
        if count in df.columns:
            df[count] = df[count].astype("Int64")
    set_marks(df, marks, extra_notes)
    return df
