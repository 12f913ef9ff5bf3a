"""Bar charts of the report tables, as PNG data URIs for a self-contained HTML page.

Each chart is drawn from the DataFrames of :mod:`editprobe.report.tables` (so the charts
and the tables can never disagree), one chart per (model, dataset). Matplotlib is driven
through ``Figure`` + the Agg canvas directly: no pyplot, so no global figure registry and
no GUI backend is ever touched.
"""

from __future__ import annotations

import base64
import io
import math
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .cells import TRAINED_MARK, bounds, mark
from .style import COLOURS as _COLOURS, DPI as _DPI
from .tables import SETTINGS


@dataclass(frozen=True)
class Chart:
    """One rendered chart: a title, alt text for the <img>, and the PNG as a data URI."""

    kind: str  # "negation" or "factcheck"
    title: str
    alt: str
    data_uri: str


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and not math.isfinite(value))


def _png_data_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    # No Software/date metadata: the same tables give byte-identical pages.
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


TITLE_SIZE = 10


def wrap_title(title: str, width_in: float, fontsize: float = TITLE_SIZE) -> str:
    """``title`` broken into lines that fit a figure ``width_in`` inches wide: matplotlib
    never wraps a title, and the constrained layout does not shrink one, so a long one was cut
    at both edges. An average glyph is taken as 0.6 em wide (DejaVu Sans is narrower)."""
    chars = max(int((width_in - 0.5) * 72 / (0.6 * fontsize)), 16)  # 0.5 in: the y label's margin
    return textwrap.fill(title, chars, break_on_hyphens=False)


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[str],
    values: Sequence[Sequence[Any]],
    title: str,
    ylabel: str = "%",
    ymax: float = 100.0,
    errors: Sequence[Sequence[Any]] | None = None,
    note: str | None = None,
) -> Figure:
    """Bars of ``values[g][s]`` (group g, series s); a missing value draws no bar (and is
    labelled "–" so that an absent bar is not read as 0). ``errors[g][s]``: the bar's 95%
    interval (lo, hi) drawn as an error bar, or None for none. ``note``: one more legend entry
    without a swatch (what a mark on a group's label means)."""
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    fig = Figure(figsize=(max(4.8, 1.2 + 0.3 * len(groups) * n_series), 3.4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for j, name in enumerate(series):
        xs = [i + (j - (n_series - 1) / 2) * width for i in range(len(groups))]
        ys = [float("nan") if _missing(row[j]) else float(row[j]) for row in values]
        bars = ax.bar(xs, [0.0 if math.isnan(y) else y for y in ys], width * 0.95,
                      color=_COLOURS[j % len(_COLOURS)])
        _error_bars(ax, xs, ys, [row[j] for row in errors] if errors else [])
        for bar, y in zip(bars, ys):
            bar.set_visible(not math.isnan(y))
            at = (bar.get_x() + bar.get_width() / 2, 0.0 if math.isnan(y) else y)
            ax.annotate("–" if math.isnan(y) else f"{y:.0f}", at,
                        xytext=(0, 2), textcoords="offset points", ha="center", va="bottom", fontsize=7)
    tilt = len(groups) > 4  # long method labels overlap when there are many groups
    ax.set_xticks(range(len(groups)), list(groups), rotation=20 if tilt else 0, ha="right" if tilt else "center")
    ax.set_ylim(0, ymax * 1.12)
    ax.set_ylabel(ylabel)
    ax.set_title(wrap_title(title, fig.get_figwidth()), fontsize=TITLE_SIZE)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    # Own handles: a series whose first bar is missing (hidden) would get a blank legend entry.
    # Outside the axes: bars reach 100 % and a legend inside would cover them.
    handles = [Patch(color=_COLOURS[j % len(_COLOURS)], label=name) for j, name in enumerate(series)]
    if note:
        handles.append(Patch(color="none", label=note))
    fig.legend(handles=handles, loc="outside lower center", ncols=n_series + bool(note), fontsize=8, frameon=False)
    return fig


def _error_bars(ax, xs: Sequence[float], ys: Sequence[float], intervals: Sequence[Any]) -> None:
    """A black whisker from lo to hi on each bar that has a value and an interval."""
    points = [(x, y, iv) for x, y, iv in zip(xs, ys, intervals) if not math.isnan(y) and iv is not None
              and not _missing(iv[0]) and not _missing(iv[1])]
    if points:
        ax.errorbar([x for x, _, _ in points], [y for _, y, _ in points],
                    yerr=[[max(y - iv[0], 0.0) for _, y, iv in points], [max(iv[1] - y, 0.0) for _, y, iv in points]],
                    fmt="none", ecolor="#222222", elinewidth=0.8, capsize=2)


def _intervals(df: pd.DataFrame, rows: pd.DataFrame, columns: Sequence[str]) -> list[list[Any]]:
    """Each row's (lo, hi) per column (``rows`` keep their position in ``df`` as index)."""
    positions = {label: i for i, label in enumerate(df.index)}
    out = []
    for label in rows.index:
        found = [bounds(df, c, positions[label]) for c in columns]
        out.append([None if b is None else (b[0], b[1]) for b in found])
    return out


def _marked_groups(df: pd.DataFrame, rows: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    """Each row's method, marked † where the row's editor trained on a form one of the charted
    columns asks (the tables mark the cells themselves)."""
    positions = {label: i for i, label in enumerate(df.index)}
    return [f"{method} {TRAINED_MARK}" if any(TRAINED_MARK in mark(df, c, positions[label]) for c in columns)
            else str(method) for label, method in zip(rows.index, rows["Method"])]


TRAINED_CHART_NOTE = f"{TRAINED_MARK} the editor trained on a query form charted here: not held-out evidence"


def _trained_note(groups: Sequence[str]) -> str | None:
    return TRAINED_CHART_NOTE if any(g.endswith(TRAINED_MARK) for g in groups) else None


def _per_model_dataset(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(title, rows) per (model, dataset), in first-seen order; the model is named only when
    the report holds several."""
    several = df["Model"].nunique() > 1
    out = []
    for (model, dataset), rows in df.groupby(["Model", "Dataset"], sort=False):
        out.append((f"{model} — {dataset}" if several else str(dataset), rows))
    return out


def _render(kind: str, title: str, alt: str, groups: list[str], series: Sequence[str],
            values: list[list[Any]], errors: list[list[Any]] | None = None) -> Chart:
    fig = grouped_bars(groups, series, values, title, errors=errors, note=_trained_note(groups))
    return Chart(kind=kind, title=title, alt=alt, data_uri=_png_data_uri(fig))


def negation_charts(negation: pd.DataFrame) -> list[Chart]:
    """PP/PN/NN/NP exact match per method (the "No edit" group has PP and PN only)."""
    charts = []
    for name, rows in _per_model_dataset(negation):
        title = f"Exact match (%) on positive and negated queries: {name}"
        values = [[row[s] for s in SETTINGS] for _, row in rows.iterrows()]
        charts.append(_render("negation", title, f"Bar chart of PP, PN, NN, NP per method for {name}, with 95% "
                              "intervals", _marked_groups(negation, rows, SETTINGS), SETTINGS, values,
                              _intervals(negation, rows, SETTINGS)))
    return charts


def factcheck_charts(factcheck: pd.DataFrame) -> list[Chart]:
    """Efficacy (Eff = PP) beside fact-check accuracy (Acc) per method."""
    charts = []
    for name, rows in _per_model_dataset(factcheck):
        title = f"Efficacy (Eff) vs fact-check accuracy (Acc), %: {name}"
        values = [[row["Eff"], row["Acc"]] for _, row in rows.iterrows()]
        charts.append(_render("factcheck", title, f"Bar chart of Eff and Acc per method for {name}, with 95% "
                              "intervals", _marked_groups(factcheck, rows, ("Eff", "Acc")), ("Eff", "Acc"), values,
                              _intervals(factcheck, rows, ("Eff", "Acc"))))
    return charts
