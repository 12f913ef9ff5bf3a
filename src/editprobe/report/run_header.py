"""The report's run header: what made the numbers, read from the runs' own files (never the
time the report is written). Per run: when it finished (``timings.finished`` in its summary;
a run made before that was recorded: its summary.json's file time, said so), the editprobe
version that made it (``versions``; "unknown" where absent), model and dtype, datasets with
their records, seed, methods, and the command where a summary records one."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from html import escape
from pathlib import Path

from ..runs.store import SUMMARY
from ..runs.summary import RunSummary

UNKNOWN = "unknown"
HEADER_COLUMNS = ("Run", "Finished", "editprobe", "Model", "Datasets (records)", "Seed", "Methods")


def run_date(summary: RunSummary, root: Path | None) -> str:
    """When the run finished, in UTC: as recorded, else its summary.json's file time."""
    finished = (summary.timings or {}).get("finished")
    if isinstance(finished, str) and finished:
        return finished.replace("T", " ").removesuffix("Z")[:16] + " UTC"
    if root is not None and (root / SUMMARY).is_file():
        stamp = dt.datetime.fromtimestamp((root / SUMMARY).stat().st_mtime, dt.timezone.utc)
        return f"{stamp:%Y-%m-%d %H:%M} UTC (file time of {SUMMARY})"
    return UNKNOWN


def _datasets(summary: RunSummary) -> str:
    return ", ".join(f"{key} ({d.n_edited if d.n_edited is not None else d.n_records})"
                     for key, d in summary.datasets.items()) or "–"


def _methods(summary: RunSummary) -> str:
    names = dict.fromkeys(f"{r.method}+{r.variant}" if r.variant else r.method for r in summary.results)
    return ", ".join(names) or "none (no edit)"


def header_rows(summaries: Sequence[RunSummary], runs: Sequence[Path | None], labels: Sequence[str]
                ) -> list[dict[str, str]]:
    """One row per run (``runs``: each summary's directory, None where unknown)."""
    rows = []
    for summary, root, label in zip(summaries, runs, labels):
        model = summary.model + (f" ({summary.model_dtype})" if summary.model_dtype else "")
        rows.append(dict(zip(HEADER_COLUMNS, (
            label, run_date(summary, root), (summary.versions or {}).get("editprobe") or UNKNOWN, model,
            _datasets(summary), str(summary.seed), _methods(summary)))))
    return rows


def _distinct(rows: list[dict[str, str]], column: str) -> str:
    return ", ".join(dict.fromkeys(r[column] for r in rows))


def header_html(summaries: Sequence[RunSummary], runs: Sequence[Path | None], labels: Sequence[str]) -> str:
    """A one-line summary (what a reader checks first), then the table of runs."""
    rows = header_rows(summaries, runs, labels)
    if not rows:
        return ""
    facts = [("runs", str(len(rows))), ("finished", _distinct(rows, "Finished")),
             ("editprobe", _distinct(rows, "editprobe")),
             ("model", ", ".join(dict.fromkeys(s.model for s in summaries))),
             ("datasets (records)", _distinct(rows, "Datasets (records)")),
             ("seed", _distinct(rows, "Seed"))]
    commands = [str(s.model_extra.get("command")) for s in summaries if (s.model_extra or {}).get("command")]
    if commands:
        facts.append(("command", "; ".join(dict.fromkeys(commands))))
    line = "".join(f'<div><dt>{escape(k)}</dt><dd data-fact="{escape(k)}">{escape(v)}</dd></div>' for k, v in facts)
    head = "".join(f"<th>{escape(c)}</th>" for c in HEADER_COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{escape(r[c])}</td>" for c in HEADER_COLUMNS) + "</tr>" for r in rows)
    note = ("Read from the runs' own files: the time each run finished, the editprobe version that made it "
            f"(“{UNKNOWN}” for a run that did not record it), the records of each dataset (those edited).")
    return (f'<section id="runs" class="ep-run-header"><h2>Runs</h2><dl class="ep-facts">{line}</dl>'
            f'<div class="table-wrap"><table class="ep-table ep-runs" id="ep-table-runs"><thead><tr>{head}</tr>'
            f'</thead><tbody>{body}</tbody></table></div><p class="note">{escape(note)}</p></section>')
