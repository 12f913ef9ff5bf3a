"""The battery table (docs/battery.md#the-battery-table): grounded efficacy first, then every
other battery probe's metrics, one column each as the classic table has them, each probe
followed by its n; the No-edit row on the true fact; a probe at its floor or at chance on the
model has its cells marked ``‡`` and the reason in a note under the table, and the cells of a
form the row's editor trained on are marked ``†`` as in every table. Notes under the table also
say what each probe skipped (its ``details.skipped`` counts) and which battery probes a run
asked for did not apply to a dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..probes.base import PROBES, ProbeOutcome
from ..probes.battery import BATTERY_TABLE
from ..runs.summary import RunSummary
from .cells import FLAG_MARK, MARKS_KEY, NO_EDIT, table_frame, trained_marks
from .labels import row_labeller

HEADLINE = "grounded"  # the grounded-efficacy probe and its metric: the table's first column
PARTS_COLUMN = "grounded over"
KEYS = ("Model", "Dataset", "Method")


def _battery(outcomes: dict[str, ProbeOutcome]) -> dict[str, ProbeOutcome]:
    """The row's battery outcomes, the headline first."""
    found = {name: o for name, o in outcomes.items() if o.table == BATTERY_TABLE}
    return dict(sorted(found.items(), key=lambda item: item[0] != HEADLINE))


def column_of(probe: str, metric: str) -> str:
    return HEADLINE if (probe, metric) == (HEADLINE, HEADLINE) else f"{probe} {metric}"


def _parts_text(outcome: ProbeOutcome) -> str | None:
    """Over which parts the grounded number was computed: those every judged record has, and
    those only some have."""
    every, some = outcome.details.get("every_record"), outcome.details.get("some_records")
    if every is None and some is None:
        return None
    text = ", ".join(every or []) or "–"
    text = f"{text}; some records: {', '.join(some)}" if some else text
    flagged = outcome.details.get("flagged_out")
    return f"{text}; left out (flagged): {', '.join(flagged)}" if flagged else text


class _Layout:
    """The columns met so far, in order (headline first), their legend, and the flag notes."""

    def __init__(self) -> None:
        self.columns: dict[str, None] = {}
        self.legend: dict[str, str] = {}
        self.notes: dict[str, None] = {}

    def cells(self, model: str, dataset: str, outcomes: dict[str, ProbeOutcome]) -> dict[str, Any]:
        cells: dict[str, Any] = {}
        marks: dict[str, str] = {}
        for name, outcome in _battery(outcomes).items():
            for key, metric in outcome.metrics.items():
                column = column_of(name, key)
                cells[column] = metric
                self.legend.setdefault(column, f"{metric.label} ({metric.unit})")
            if name == HEADLINE:
                cells[PARTS_COLUMN] = _parts_text(outcome)
            count = next((m.n for m in outcome.metrics.values() if m.n is not None), None)
            cells[f"{name} n"] = count
            flag = outcome.details.get("flag")
            if flag:
                marks.update({column_of(name, key): FLAG_MARK for key in outcome.metrics})
                self.notes.setdefault(f"{FLAG_MARK} {name} ({model}, {dataset}): {flag}")
            skipped = skipped_text(outcome.details.get("skipped"))
            if skipped:
                self.notes.setdefault(f"{name} ({model}, {dataset}) skipped: {skipped}")
        self.columns.update(dict.fromkeys(cells))
        return {**cells, MARKS_KEY: marks} if cells else {}


def skipped_text(skipped: Any, within: str = "") -> str:
    """A probe's skip counts (``{reason: n}``, or per metric ``{metric: {reason: n}}``) as one
    phrase, e.g. ``1 (the paraphrase holds braces)``; empty when nothing was skipped."""
    if isinstance(skipped, str):
        return f"{within}{skipped}"
    if not isinstance(skipped, dict):
        return ""
    parts = []
    for key, value in skipped.items():
        if isinstance(value, dict):
            parts.append(skipped_text(value, f"{within}{key}: "))
        elif isinstance(value, int) and value:
            parts.append(f"{within}{value} ({key})")
    return "; ".join(p for p in parts if p)


def not_applied(summary: RunSummary) -> list[str]:
    """Notes for the battery probes a run asked for that applied to none of a dataset's records."""
    asked = [p for p in summary.config.get("probes", []) if p in PROBES and PROBES[p].table == BATTERY_TABLE]
    return [f"{name} ({summary.model}, {dk}): not asked: it applies to none of the dataset's records "
            f"(docs/battery.md)" for dk, d in summary.datasets.items() for name in asked if name not in d.probes]


def battery_table(summaries: Sequence[RunSummary]) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """The battery probes' table and its legend (each column's protocol); None when no run has
    a battery probe."""
    layout = _Layout()
    rows = _no_edit_rows_with(summaries, layout)
    label = row_labeller(summaries)
    for s in summaries:
        for r in s.results:
            cells = layout.cells(s.model, r.dataset, r.probes)
            if not cells:
                continue
            for name in _battery(r.probes):
                marks = trained_marks(r, name, {key: column_of(name, key) for key in r.trained_cells.get(name, ())})
                for column, mark in marks.items():  # a cell may carry both marks
                    cells[MARKS_KEY][column] = mark + cells[MARKS_KEY].get(column, "")
            rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r), **cells})
    if not layout.columns:
        return None
    for s in summaries:
        layout.notes.update(dict.fromkeys(not_applied(s)))
    counts = [c for c in layout.columns if c.endswith(" n")]
    return table_frame(rows, (*KEYS, *layout.columns), counts, list(layout.notes)), layout.legend


def _no_edit_rows_with(summaries: Sequence[RunSummary], layout: _Layout) -> list[dict[str, Any]]:
    """One "No edit" row per (model, dataset), from the first run that has it (as every table)."""
    seen, out = set(), []
    for s in summaries:
        for dk, d in s.datasets.items():
            if (s.model, dk) in seen:
                continue
            seen.add((s.model, dk))
            cells = layout.cells(s.model, dk, d.no_edit)
            if cells:
                out.append({"Model": s.model, "Dataset": dk, "Method": NO_EDIT, **cells})
    return out
