"""The report tables as HTML: each cell as every output writes it (cells.py: "97.0 [93.1, 99.4]",
its marks), a share of records with its count k/n on a second line, and under each table what
its marks mean and its legend (legends.py: the same text as the Markdown and LaTeX)."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

import pandas as pd

from ..runs.summary import RunSummary
from .cells import NO_EDIT, count, notes, text_rows
from .tables import all_tables

# The table whose caption is better set in HTML than as escaped text.
_HTML_CAPTIONS = {"ablation": "With and without the preserved keys K<sub>p</sub>K<sub>p</sub><sup>T</sup>"}
TABLES_NOTE = ("– = not applicable or not computed (never 0). A metric reads “value [low, high]”: its 95% interval "
               "(docs/statistics.md); [–]: none was computed. Under a percentage that is a share of records, k/n: "
               "k of the n records.")


def _cell(text: str, share: tuple[int, int] | None) -> str:
    if share is None:
        return f"<td>{escape(text)}</td>"
    k, n = share
    return (f'<td title="{k} of {n} records">{escape(text)}'
            f'<span class="ep-n" data-k="{k}" data-n="{n}">{k}/{n}</span></td>')


def table_html(df: pd.DataFrame, name: str) -> str:
    """One table; a "No edit" row gets class="no-edit" for the stylesheet."""
    head = "".join(f"<th>{escape(str(c))}</th>" for c in df.columns)
    method = list(df.columns).index("Method") if "Method" in df.columns else None
    body = []
    for i, texts in enumerate(text_rows(df)):
        cells = "".join(_cell(t, count(df, c, i)) for c, t in zip(df.columns, texts))
        no_edit = method is not None and texts[method] == NO_EDIT
        body.append(f'<tr class="no-edit">{cells}</tr>' if no_edit else f"<tr>{cells}</tr>")
    return (f'<div class="table-wrap"><table class="ep-table ep-{escape(name)}" id="ep-table-{escape(name)}">'
            f'<thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')


def legend_html(name: str, df: pd.DataFrame, legend: dict[str, str] | None) -> str:
    """Under a table: what its marks mean, then each column's meaning; every table has one."""
    parts = [f'<p class="note ep-marks">{escape(line)}</p>' for line in notes(df)]
    if legend:
        items = "".join(f"<li><strong>{escape(c)}</strong>: {escape(label)}</li>" for c, label in legend.items())
        parts.append(f'<ul class="legend ep-legend ep-legend-{escape(name)}">{items}</ul>')
    return f'<div class="ep-legend-block" data-table="{escape(name)}">{"".join(parts)}</div>'


# Columns that name where a row comes from: one value in every row is said once above the table.
_WHERE = ("Model", "Dataset")


def _one_valued(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The table without its Model/Dataset columns that hold one value in every row (the widest
    tables then fit the page), and the line that says them."""
    same = [c for c in _WHERE if c in df.columns and len(df) > 0 and df[c].nunique(dropna=False) == 1]
    if not same:
        return df, ""
    said = ", ".join(f"{c.lower()} {df[c].iloc[0]}" for c in same)
    return df.drop(columns=same), f"Every row: {said}."


def tables_section(summaries: Sequence[RunSummary], run_dirs: Sequence[Path] | None = None) -> str:
    parts = ['<section id="tables"><h2>Tables</h2>']
    for name, caption, df, legend in all_tables(summaries, run_dirs):
        shown, where = _one_valued(df)
        parts += [f"<h3>{_HTML_CAPTIONS.get(name) or escape(caption)}</h3>",
                  f'<p class="note ep-where">{escape(where)}</p>' if where else "", table_html(shown, name),
                  legend_html(name, df, legend)]
    parts.append(f'<p class="note">{escape(TABLES_NOTE)}</p></section>')
    return "".join(parts)
