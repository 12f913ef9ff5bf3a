"""docs/results.md prints what `editprobe report` writes for the committed results study
(results/smollm2-135m: each finished run's config.json and summary.json, which is all the
report's tables read, and records.jsonl, the per-record values `report --compare` pairs): every table under a `<!-- report: TABLE DATASET -->` marker has the
report's rows for that dataset, and each of its cells is the report's cell of that row and
column. Edit the page's prose freely; its numbers come from the report."""

from __future__ import annotations

import re
from pathlib import Path

from editprobe.report import load_summaries, write_tables
from editprobe.studies.study import StudyDir

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "results" / "smollm2-135m"
PAGE = ROOT / "docs" / "results.md"
MARKER = re.compile(r"^<!--\s*report:\s*(\w+)\s+([\w-]+)\s*-->$")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split(" | ")]


def _table(lines: list[str]) -> list[dict[str, str]]:
    """The rows of the Markdown table that starts at lines[0] (header, rule, rows)."""
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append(_cells(line))
    head = rows[0]
    return [dict(zip(head, row)) for row in rows[2:]]


def _page_tables() -> list[tuple[str, str, int, list[dict[str, str]]]]:
    lines = PAGE.read_text(encoding="utf-8").splitlines()
    found = []
    for number, line in enumerate(lines):
        match = MARKER.match(line.strip())
        if match:
            start = next(i for i in range(number + 1, len(lines)) if lines[i].strip())
            found.append((match[1], match[2], number + 1, _table(lines[start:])))
    return found


def test_results_page_tables_are_the_reports_tables(tmp_path):
    runs = StudyDir(STUDY).finished_dirs()
    assert runs, f"{STUDY}: no finished run"
    write_tables(load_summaries(runs), tmp_path, run_dirs=runs)
    tables = _page_tables()
    assert len(tables) >= 6, "docs/results.md: the report markers are gone"
    for name, dataset, line, rows in tables:
        report = [r for r in _table((tmp_path / f"{name}.md").read_text(encoding="utf-8").splitlines())
                  if r["Dataset"] == dataset]
        by_method = {r["Method"]: r for r in report}
        where = f"docs/results.md:{line} ({name}, {dataset})"
        assert sorted(r["Method"] for r in rows) == sorted(by_method), f"{where}: not the report's rows"
        for row in rows:
            for column, cell in row.items():
                assert column in by_method[row["Method"]], f"{where}: the report has no column {column!r}"
                assert cell == by_method[row["Method"]][column], \
                    f"{where}: {row['Method']} {column}: page {cell!r}, report {by_method[row['Method']][column]!r}"


def test_the_committed_study_holds_only_what_the_report_reads():
    allowed = {".editprobe.json", "config.json", "summary.json", "records.jsonl"}  # .editprobe.json: the run-directory mark
    extra = [str(p.relative_to(STUDY)) for p in (STUDY / "runs").rglob("*")
             if p.is_file() and p.name not in allowed]
    assert not extra, f"keep the committed runs small ({', '.join(sorted(allowed))}): {extra}"
