"""The curve over edits (docs/curves.md): the evaluation points of runs made with
``eval: every`` as one long table (``curves.csv``) and as figures (PNG and SVG).

A point is one stage ("positive"/"negative") of one method after some batches, measured over
the records edited so far (part "edited") or over the held-out records no run edits (part
"heldout"). The table has one row per point × metric. The figures are drawn from that table
(so they cannot disagree with it): one per (model, dataset, stage, part), one panel per
metric (at most :data:`MAX_PANELS`), x the number of edits, one line per method with its 95%
interval as a shaded band. Matplotlib is driven through ``Figure`` and the Agg canvas (no
pyplot); the files are byte-identical for the same summaries.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ..runs.summary import RunSummary
from .labels import row_labeller
from .style import COLOURS, DPI

CURVE_COLUMNS = ("Model", "Dataset", "Method", "stage", "part", "batches", "edits", "records", "probe", "metric",
                 "unit", "value", "lo", "hi", "n")
CURVES_CSV = "curves.csv"
CURVES_DIR = "curves"  # the figures: curves/<dataset>-<stage>-<part>.png and .svg
# Panels per figure: the first metrics in the order the probes report them, differences
# ("points": PP−PN, a magnitude) after the rates they are made of; curves.csv holds them all.
MAX_PANELS = 6
PANEL_COLUMNS = 3
PARTS = {"edited": "records edited so far", "heldout": "held-out records (never edited)"}
LABELS = "labels"  # df.attrs: (probe, metric) -> the metric's protocol label


def curve_table(summaries: Sequence[RunSummary]) -> pd.DataFrame | None:
    """Every evaluation point × metric of every run, in the runs' order; None when no run has
    a curve."""
    label = row_labeller(summaries)
    rows: list[dict[str, Any]] = []
    labels: dict[tuple[str, str], str] = {}
    for s in summaries:
        for r in s.results:
            for point in r.curve:
                for probe, outcome in point.probes.items():
                    for key, metric in outcome.metrics.items():
                        labels.setdefault((probe, key), metric.label)
                        rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r),
                                     "stage": point.stage, "part": point.part, "batches": point.batches,
                                     "edits": point.edits, "records": point.n_records, "probe": probe,
                                     "metric": key, "unit": metric.unit, "value": _number(metric.value),
                                     "lo": _number(metric.lo), "hi": _number(metric.hi), "n": metric.n})
    if not rows:
        return None
    df = pd.DataFrame(rows, columns=list(CURVE_COLUMNS))
    for column in ("batches", "edits", "records", "n"):
        df[column] = df[column].astype("Int64")
    for column in ("value", "lo", "hi"):
        df[column] = df[column].astype("Float64")
    df.attrs[LABELS] = labels
    return df


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


# --- figures --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CurveFigure:
    """One figure: its file stem (under curves/), title, alt text, and its bytes per format."""

    name: str
    title: str
    alt: str
    files: dict[str, bytes]  # "png", "svg"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _panels(rows: pd.DataFrame) -> list[tuple[str, str]]:
    """(probe, metric) of the panels: those with a value, rates before differences, capped."""
    found = rows.dropna(subset=["value"]).drop_duplicates(["probe", "metric"])
    order = sorted(range(len(found)), key=lambda i: found.iloc[i]["unit"] == "points")  # stable
    return [(found.iloc[i]["probe"], found.iloc[i]["metric"]) for i in order]


def _protocol(label: str) -> str:
    """The protocol's name: a label reads "protocol: what it counts"."""
    return label.split(":", 1)[0]


def _draw_panel(ax, rows: pd.DataFrame, methods: list[str], probe: str, key: str, label: str, slot: int) -> None:
    shown = rows[(rows["probe"] == probe) & (rows["metric"] == key)]
    unit = shown["unit"].iloc[0]
    for j, method in enumerate(methods):
        line = shown[shown["Method"] == method].sort_values("edits")
        if line.empty:
            continue
        colour = COLOURS[j % len(COLOURS)]
        x, y, lo, hi = (line[c].to_numpy(dtype=float, na_value=math.nan) for c in ("edits", "value", "lo", "hi"))
        band = ax.fill_between(x, lo, hi, color=colour, alpha=0.2, linewidth=0)
        band.set_gid(f"band-{slug(method)}-{slot}")
        (drawn,) = ax.plot(x, y, color=colour, marker="o", markersize=3, linewidth=1.4)
        drawn.set_gid(f"curve-{slug(method)}-{slot}")
    ax.set_title("\n".join(textwrap.wrap(f"{probe} {key}: {_protocol(label)}", 42)), fontsize=8)
    ax.set_ylabel(unit, fontsize=8)
    if unit == "%":
        ax.set_ylim(-3, 103)
    ax.xaxis.get_major_locator().set_params(integer=True)  # edits are counts
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(alpha=0.3)


def _last_n(rows: pd.DataFrame, methods: list[str]) -> dict[str, Any]:
    """Each method's records measured at its last point."""
    out = {}
    for method in methods:
        mine = rows[rows["Method"] == method]
        if not mine.empty:
            out[method] = mine.sort_values("edits", kind="stable")["records"].iloc[-1]
    return out


def _figure(title: str, rows: pd.DataFrame, methods: list[str], labels: dict[tuple[str, str], str]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    panels = _panels(rows)
    drawn = panels[:MAX_PANELS]
    cols = min(PANEL_COLUMNS, max(len(drawn), 1))
    grid = math.ceil(max(len(drawn), 1) / cols)
    fig = Figure(figsize=(1.0 + 3.2 * cols, 1.0 + 2.6 * grid), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(grid, cols, squeeze=False)
    for slot, ax in enumerate(axes.flat):
        if slot >= len(drawn):
            ax.set_visible(False)
            continue
        probe, key = drawn[slot]
        _draw_panel(ax, rows, methods, probe, key, labels.get((probe, key), ""), slot)
    last = _last_n(rows, methods)
    counts = sorted(set(map(str, last.values())))
    same_n = len(counts) == 1  # else each method's n is in the legend
    for ax in axes[-1]:
        ax.set_xlabel("edits" + (f" (n = {counts[0]} records at the last point)" if same_n else ""), fontsize=8)
    more = f" — {len(drawn)} of {len(panels)} metrics; all in {CURVES_CSV}" if len(panels) > len(drawn) else ""
    fig.suptitle(title + more, fontsize=10)
    shown = [m for m in methods if m in last]
    handles = [Line2D([], [], color=COLOURS[methods.index(m) % len(COLOURS)], marker="o", markersize=3,
                      label=m if same_n else f"{m} (n = {last[m]} at the last point)") for m in shown]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4) or 1, fontsize=8,
               frameon=False, title="95% interval shaded", title_fontsize=7)
    return fig


def _bytes(fig, fmt: str) -> bytes:
    from matplotlib import rc_context

    buf = io.BytesIO()
    # No date or software metadata and a fixed id salt: the same summaries give the same files.
    metadata = {"Software": None} if fmt == "png" else {"Date": None}
    with rc_context({"svg.hashsalt": "editprobe"}):
        fig.savefig(buf, format=fmt, dpi=DPI, metadata=metadata)
    return buf.getvalue()


def curve_figures(df: pd.DataFrame, formats: Sequence[str] = ("png", "svg")) -> list[CurveFigure]:
    """One figure per (model, dataset, stage, part) of :func:`curve_table`'s table, in order;
    file stems slugged from the dataset, stage and part (the model first when several)."""
    methods = list(dict.fromkeys(df["Method"]))  # one colour per method in every figure
    several = df["Model"].nunique() > 1
    labels = df.attrs.get(LABELS, {})
    figures, taken = [], set()
    for (model, dataset, stage, part), rows in df.groupby(["Model", "Dataset", "stage", "part"], sort=False):
        where = f"{model} — {dataset}" if several else str(dataset)
        title = f"{where}: {stage} stage, {PARTS.get(part, part)}"
        name = slug("-".join([model, dataset, stage, part] if several else [dataset, stage, part]))
        while name in taken:  # two names that slug alike
            name += "-2"
        taken.add(name)
        fig = _figure(title, rows, [m for m in methods if m in set(rows["Method"])], labels)
        shown = ", ".join(f"{p} {k}" for p, k in _panels(rows)[:MAX_PANELS])
        alt = f"Curves of {shown} against the number of edits, one line per method with its 95% interval, for {title}"
        figures.append(CurveFigure(name=name, title=title, alt=alt, files={f: _bytes(fig, f) for f in formats}))
    return figures


# --- the report directory -------------------------------------------------------------------
def write_curves(summaries: Sequence[RunSummary], root: Path, own) -> str:
    """Write curves.csv and curves/<name>.png/.svg under ``root`` when a run has a curve
    (``own`` records the entries as the report's before they are written); return their
    Markdown section, "" when no run has a curve."""
    from ..paths import atomic_path, write_text_atomic

    df = curve_table(summaries)
    if df is None:
        return ""
    figures = curve_figures(df)
    own(CURVES_CSV, CURVES_DIR)
    write_text_atomic(root / CURVES_CSV, df.to_csv(index=False, na_rep=""))
    with atomic_path(root / CURVES_DIR) as tmp:  # the figures appear together
        tmp.mkdir()
        for figure in figures:
            for fmt, data in figure.files.items():
                (tmp / f"{figure.name}.{fmt}").write_bytes(data)
    listed = "".join(f"- `{CURVES_DIR}/{f.name}.png` (and `.svg`): {f.title}\n" for f in figures)
    return (f"### Curves over edits\n\n`{CURVES_CSV}`: one row per evaluation point × metric (value, lo, hi, n; "
            f"docs/curves.md). Figures, one line per method, 95% intervals shaded:\n\n{listed}")
