"""``editprobe report RUN_DIR... --compare A B``: is row A better than row B?

A and B each select one row of the runs: ``RUNDIR:method[+variant]``, or a bare
``method[+variant]`` when exactly one of the given run directories has it (``none``: the
unedited model's row). For every dataset both rows have, and every probe metric both hold
per-record values for (``records.jsonl``, runs/records.py), one line: the paired difference
A − B over the records both edited, its interval, the test and its p-value (report/paired.py),
Holm's correction over every line the report prints, and a plain verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..errors import UserError
from ..paths import write_text_atomic
from ..probes.intervals import shown
from ..runs.records import RecordValues, read_record_values
from ..runs.summary import RunSummary
from .cells import TRAINED_MARK
from .paired import PairedDifference, holm, paired_difference, permutation_draws, shared_records

ALPHA = 0.05
NO_EDIT_ROW = "none"
COLUMNS = ("Dataset", "A", "B", "Metric", "n", "difference [interval]", "test", "p", "p (Holm)", "verdict")
CSV_COLUMNS = ("dataset", "A", "B", "probe", "metric", "unit", "n", "difference", "lo", "hi", "test", "p", "p_holm",
               "verdict", "trained_on")


LEGEND = ("A − B over the records both rows have, in the metric's unit (points for a % metric), with its 95% paired "
          "bootstrap interval; test: McNemar's exact test for hit/miss outcomes, else the paired sign-flip permutation test; "
          "p (Holm): adjusted over every line of this table; verdict at Holm p < 0.05. \"No detectable difference\" "
          "is not \"equal\" (docs/statistics.md#is-a-better-than-b).")


TRAINED_LEGEND = (f"{TRAINED_MARK} A or B (column trained_on of compare.csv says which) trained on the query form "
                  "this metric asks: its difference reads a training objective back, not held-out evidence "
                  "(docs/battery.md#trained-forms).")


class CompareError(UserError, ValueError):
    pass


@dataclass(frozen=True)
class Row:
    """One selectable row: a method (with its variant) in one run directory."""

    run: Path
    label: str  # method or method+variant; "none" for the no-edit row
    # (dataset, probe, metric) whose query form the row's editor trained on (ResultRow.trained_cells)
    trained: frozenset[tuple[str, str, str]] = field(default=frozenset(), compare=False)

    def __str__(self) -> str:
        return f"{self.run}:{self.label}"


def row_label(method: str, variant: str | None) -> str:
    return f"{method}+{variant}" if variant else method


def selector_runs(pairs: Sequence[tuple[str, str]]) -> list[Path]:
    """The run directories named in the selectors (``RUNDIR:label``), in order."""
    out: list[Path] = []
    for selector in (s for pair in pairs for s in pair):
        run, sep, _ = selector.rpartition(":")
        if sep and run and Path(run) not in out:
            out.append(Path(run))
    return out


def available_rows(runs: Sequence[Path], summaries: Sequence[RunSummary]) -> list[Row]:
    """Every row of the runs (from their summaries): the no-edit row where a dataset has one."""
    rows: list[Row] = []
    for run, summary in zip(runs, summaries):
        trained: dict[str, set[tuple[str, str, str]]] = {}
        if any(d.no_edit for d in summary.datasets.values()):
            trained[NO_EDIT_ROW] = set()
        for r in summary.results:
            trained.setdefault(row_label(r.method, r.variant), set()).update(
                (r.dataset, probe, metric) for probe, metrics in r.trained_cells.items() for metric in metrics)
        rows += [Row(Path(run), label, frozenset(cells)) for label, cells in trained.items()]
    return rows


def same_dir(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def resolve(selector: str, rows: Sequence[Row]) -> Row:
    """The one row ``selector`` names; one clear error naming it and the rows there are."""
    run, sep, label = selector.rpartition(":")
    if sep and run:
        found = [r for r in rows if r.label == label and same_dir(r.run, Path(run))]
    else:
        found = [r for r in rows if r.label == selector]
    listing = ", ".join(map(str, rows)) or "none"
    if not found:
        raise CompareError(f"--compare {selector!r} selects no row; the rows are: {listing}")
    if len(found) > 1:
        raise CompareError(f"--compare {selector!r} is ambiguous ({', '.join(map(str, found))}); "
                           f"write it as RUNDIR:method")
    return found[0]


def _record_values(row: Row, cache: dict[Path, list[RecordValues]]) -> dict[str, dict[tuple[str, str], RecordValues]]:
    """dataset -> (probe, metric) -> the row's per-record values."""
    if row.run not in cache:
        cache[row.run] = read_record_values(row.run)
    out: dict[str, dict[tuple[str, str], RecordValues]] = {}
    for line in cache[row.run]:
        if row_label(line.method, line.variant) == row.label:
            out.setdefault(line.dataset, {}).setdefault((line.probe, line.metric), line)
    return out


@dataclass(frozen=True)
class Line:
    dataset: str
    a: Row
    b: Row
    probe: str
    metric: str
    unit: str
    result: PairedDifference


def compare_lines(pairs: Sequence[tuple[Row, Row]]) -> list[Line]:
    """One line per dataset both rows have × metric both hold per-record values for."""
    cache: dict[Path, list[RecordValues]] = {}
    candidates = []
    for a, b in pairs:
        values_a, values_b = _record_values(a, cache), _record_values(b, cache)
        for dataset in (d for d in values_a if d in values_b):
            for key, line_a in values_a[dataset].items():
                line_b = values_b[dataset].get(key)
                if line_b is not None and line_b.unit == line_a.unit and shared_records(line_a.values, line_b.values):
                    candidates.append((dataset, a, b, key, line_a, line_b))
    draws = permutation_draws(len(candidates))  # Holm over all of them must be able to find a difference
    lines = []
    for dataset, a, b, key, line_a, line_b in candidates:
        result = paired_difference(line_a.values, line_b.values, line_a.unit, resamples=draws)
        lines.append(Line(dataset, a, b, key[0], key[1], line_a.unit, result))
    return lines


def signed(value: float, lo: float | None, hi: float | None) -> str:
    """A difference in the one display convention, its sign shown: ``+3.0 [-1.2, 7.4]``."""
    return ("+" if value > 0 else "") + shown(value, lo, hi)


def _p_text(p: float) -> str:
    return "<0.0001" if p < 0.0001 else f"{p:.4f}"


def _verdict(difference: float, p_holm: float) -> str:
    if p_holm < ALPHA and difference != 0:
        return "A higher" if difference > 0 else "B higher"
    return "no detectable difference"


def _names(lines: Sequence[Line]) -> dict[Row, str]:
    """How a row is named in the table: its label, or RUNDIR:label where two runs share it."""
    rows = {r for line in lines for r in (line.a, line.b)}
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.label] = counts.get(r.label, 0) + 1
    return {r: r.label if counts[r.label] == 1 else str(r) for r in rows}


def trained_on(line: Line) -> str:
    """Which of the two rows trained on the query form the line's metric asks: "A", "B", "A, B" or ""."""
    cell = (line.dataset, line.probe, line.metric)
    return ", ".join(side for side, row in (("A", line.a), ("B", line.b)) if cell in row.trained)


def compare_frames(lines: Sequence[Line]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the table as text cells, the CSV frame with numbers in their own columns)."""
    adjusted = holm([line.result.p for line in lines])
    names = _names(lines)
    text, numbers = [], []
    for line, p_holm in zip(lines, adjusted):
        r = line.result
        verdict = _verdict(r.difference, p_holm)
        trained = trained_on(line)
        metric = f"{line.probe} {line.metric}" + (TRAINED_MARK if trained else "")
        text.append([line.dataset, names[line.a], names[line.b], metric, str(r.n),
                     signed(r.difference, r.lo, r.hi), r.test, _p_text(r.p), _p_text(p_holm), verdict])
        numbers.append([line.dataset, names[line.a], names[line.b], line.probe, line.metric, line.unit, r.n,
                        r.difference, r.lo, r.hi, r.test, r.p, p_holm, verdict, trained])
    return pd.DataFrame(text, columns=list(COLUMNS)), pd.DataFrame(numbers, columns=list(CSV_COLUMNS))


def compare_markdown(text: pd.DataFrame) -> str:
    def escape(cell: Any) -> str:
        return str(cell).replace("|", r"\|")

    header = "| " + " | ".join(COLUMNS) + " |"
    align = "|" + "|".join("---:" if c in ("n", "difference [interval]", "p", "p (Holm)") else "---"
                           for c in COLUMNS) + "|"
    body = ["| " + " | ".join(escape(c) for c in row) + " |" for row in text.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def select_pairs(pairs: Sequence[tuple[str, str]], runs: Sequence[Path], summaries: Sequence[RunSummary]
                 ) -> list[tuple[Row, Row]]:
    rows = available_rows(runs, summaries)
    return [(resolve(a, rows), resolve(b, rows)) for a, b in pairs]


def write_compare(lines: Sequence[Line], out: str | Path) -> str:
    """``compare.md`` and ``compare.csv`` into the report directory ``out``; the Markdown."""
    from ..workdir import WorkDir

    text, numbers = compare_frames(lines)
    legend = LEGEND + (f"\n\n{TRAINED_LEGEND}" if any(numbers["trained_on"]) else "")
    md = f"{compare_markdown(text)}\n{legend}\n" if lines else "No metric with per-record values in both rows.\n"
    work = WorkDir(out, "report")
    with work.hold():
        work.own("compare.md", "compare.csv")
        write_text_atomic(work.root / "compare.md", md)
        write_text_atomic(work.root / "compare.csv", numbers.to_csv(index=False, na_rep=""))
    return md
