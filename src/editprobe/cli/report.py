"""`editprobe report RUN_DIR...`: the tables of finished runs, and the HTML report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from typer.core import TyperCommand

from .common import fail


class _ReportCommand(TyperCommand):
    """``--compare`` takes two values and may be repeated: typer has no annotation for a list
    of pairs, so the click option is given both properties here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if param.name == "compare":
                param.nargs, param.multiple = 2, True


def report(
    run_dirs: list[Path] = typer.Argument(..., help="finished run directories (with --html also trace and analysis "
                                                    "directories)"),
    out: Path = typer.Option(Path("report"), help="where the .md/.csv/.tex tables go"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write one self-contained HTML report (tables, "
                                                             "charts, trace/analysis figures, sample browser)"),
    compare: Optional[list[tuple]] = typer.Option(
        None, "--compare", metavar="A B", help="is row A better than row B? Rows as RUNDIR:method[+variant] or a method name "
                                "one run has; paired difference per metric on the records both edited, interval, "
                                "p-value, Holm-corrected (compare.md/.csv); repeat for several pairs"),
) -> None:
    """Negation, fact-check and (when runs differ in it) preserve-previous ablation tables;
    with --compare A B also paired comparisons of two rows; with --html also one self-contained
    page of them, charts, traces, analyses and samples."""
    from ..report import load_summaries, write_tables
    from ..report.compare import compare_lines, same_dir, select_pairs, write_compare
    from ..report.compare import selector_runs as compare_runs
    from ..report.html import check_html_output, classify_dirs, write_html
    from ..studies.study import StudyDir, is_study_dir
    from ..workdir import WorkDir

    WorkDir(out, "report").check()  # output locations first: a foreign one is refused before any reading
    if html is not None:
        check_html_output(html)

    # A study directory stands for its finished runs.
    expanded: list[Path] = []
    for d in run_dirs:
        expanded += StudyDir(d).finished_dirs() if is_study_dir(d) else [d]
    if not expanded:
        fail("the study directories hold no finished run yet (editprobe study DIR --status)")
    expanded += [d for d in compare_runs(compare or []) if not any(same_dir(d, e) for e in expanded)]
    sources = classify_dirs(expanded)
    if not sources.runs and html is None:
        fail("no finished run directory (summary.json) among the arguments; trace and analysis directories "
             "are shown only with --html")
    summaries: list[dict[str, Any]] = []
    if sources.runs:
        try:
            summaries = load_summaries(sources.runs)
            # Every row selected and its per-record values read before any output is written.
            lines = compare_lines(select_pairs(compare, sources.runs, summaries)) if compare else None
            text = write_tables(summaries, out, run_dirs=sources.runs)  # runs' records.jsonl: pooled intervals
        except KeyError as exc:
            fail(f"a run summary lacks the field {exc}; was it written by this version?")
        except ValueError as exc:
            fail(exc)
        # Plain echo: rich would wrap wide table lines and break the Markdown.
        typer.echo(text)
        typer.echo(f"tables (md, csv, tex) in {out}")
        if lines is not None:
            typer.echo(f"\n### Paired comparisons\n\n{write_compare(lines, out)}")
            typer.echo(f"comparison (compare.md, compare.csv) in {out}")
    if html is not None:
        try:
            write_html(html, sources, summaries)
        except KeyError as exc:
            fail(f"a run summary or sample lacks the field {exc}; was it written by this version?")
        typer.echo(f"HTML report in {html}")


def register(app: typer.Typer) -> None:
    app.command("report", cls=_ReportCommand)(report)
