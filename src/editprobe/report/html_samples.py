"""The report's sample browser: every scored query of the runs as a JSON block that
``assets/report.js`` renders into a filterable, sortable table, with a per-record view (PP, PN,
NN, NP of one record side by side) and a CSV export of the filtered rows, all client-side."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from ..jsontext import finite
from ..runs.store import SAMPLES, read_samples

MAX_ROWS = 500  # sample rows put into the DOM at once; the rest are counted, not drawn
# Fields of a samples.jsonl row that the browser shows or filters on; the rest stay out of
# the page to keep it small.
SAMPLE_FIELDS = ("dataset", "method", "edited_with", "setting", "record_id", "query", "expected", "generated",
                 "match", "answer")
# The unedited model's positive query is asked toward the record's old object o: its expected
# is target_true (records without an old object, zsRE read toward answers[0], have no such row).
OLD_TARGET_SETTING = "no-edit-P"
# (key in the row, header): the table's columns in order; report.js sorts and exports by key.
COLUMNS = (("run", "Run"), ("dataset", "Dataset"), ("method", "Method"), ("edited_with", "Edited with"),
           ("setting", "Setting"), ("record_id", "Record"), ("query", "Query"), ("target_true", "Old target o"),
           ("expected", "Expected"), ("generated", "Generated"), ("match", "Match"))
SAMPLES_NOTE = (
    "Every scored query of the runs. Match is the verdict the metrics count: exact match of the expected "
    "object (teacher-forced) for query settings, a “true” answer for fact-check rows. Generated is a greedy "
    "decode for reading (fact-check rows: the reply, → the parsed answer). Settings: PP/PN come from the "
    "positively edited model, NN/NP from the negatively edited one, no-edit-* and factcheck-* from the "
    "baseline and fact-checking.")
OLD_TARGET_NOTE = (
    "Old target o is the record's true object before the edit (the unedited model's no-edit-P row; – where "
    "the record has none); Expected is what the row is scored toward (o* for PP/PN/NN/NP). Click a record to "
    "see what the model answered to it under PP, PN, NN and NP side by side; click a column header to sort; "
    "Export CSV writes every row the filters keep (not only the drawn ones).")
HALLUCINATION_NOTE = (
    "“Hallucinated under negation” = setting PN with match ✓: the model was edited with the positive "
    "request (s r → o*), then asked the negated query (s not-r), and it still completes it with the new "
    "object o* (exact match of o*, teacher-forced). The edit leaked into a statement that denies it. "
    "NN rows are not included: there o* after the negated query is the requested edit itself.")


def embed_json(obj: Any) -> str:
    """JSON safe inside <script>: every < > & is written as a \\u escape (they can only occur
    in strings), so neither </script> nor <!-- in the data can end or bend the block."""
    text = json.dumps(finite(obj), ensure_ascii=False, allow_nan=False)  # NaN of older runs: null
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


class SamplesReadError(ValueError):
    """A samples.jsonl that cannot be read (html.py turns it into the report's input error)."""


def run_labels(runs: Sequence[Path]) -> list[str]:
    names = [p.resolve().name or str(p) for p in runs]
    return names if len(set(names)) == len(names) else [str(p) for p in runs]


def _with_old_targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its record's old object (``target_true``), where the run asked for it."""
    old = {(r["run"], r.get("dataset"), r.get("record_id")): r.get("expected") for r in rows
           if r.get("setting") == OLD_TARGET_SETTING}
    for r in rows:
        found = old.get((r["run"], r.get("dataset"), r.get("record_id")))
        if found is not None:
            r["target_true"] = found
    return rows


def collect_samples(runs: Sequence[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """The browser's rows (trimmed to SAMPLE_FIELDS, tagged with the run, with the old target)
    and notes on runs without per-sample records."""
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for label, root in zip(run_labels(runs), runs):
        if not (root / SAMPLES).is_file():
            notes.append(f"{root}: no {SAMPLES}; its samples are not shown")
            continue
        try:
            samples = read_samples(root)
        except (OSError, json.JSONDecodeError) as exc:
            raise SamplesReadError(f"cannot read {root / SAMPLES}: {exc}") from exc
        rows.extend({"run": label, **{k: s.get(k) for k in SAMPLE_FIELDS if k in s}} for s in samples)
    return _with_old_targets(rows), notes


def _controls() -> str:
    select = '<label>{label}<select id="ep-f-{key}"><option value="">all</option>{extra}</select></label>'
    return "".join([
        select.format(label="Method", key="method", extra=""),
        select.format(label="Dataset", key="dataset", extra=""),
        select.format(label="Setting", key="setting", extra=""),
        select.format(label="Match", key="match",
                      extra='<option value="yes">matched</option><option value="no">not matched</option>'),
        '<label>Search (query, targets, generated, record)<input type="search" id="ep-f-search" '
        'placeholder="text…"></label>',
        '<button type="button" class="preset" id="ep-preset-hallucinated" aria-pressed="false">'
        "Hallucinated under negation</button>",
        '<button type="button" id="ep-reset">Reset</button>',
        '<button type="button" id="ep-export">Export CSV (filtered rows)</button>',
    ])


def samples_section(runs: Sequence[Path]) -> str:
    rows, notes = collect_samples(runs)
    note_html = "".join(f'<p class="missing">{escape(n)}</p>' for n in notes)
    heads = "".join(f'<th data-key="{key}" aria-sort="none" tabindex="0" title="sort by {escape(head)}">'
                    f"{escape(head)}</th>" for key, head in COLUMNS)
    return (f'<section id="samples"><h2>Samples</h2>{note_html}'
            f'<p class="note">{escape(SAMPLES_NOTE)} {escape(OLD_TARGET_NOTE)} {escape(HALLUCINATION_NOTE)} '
            f"At most {MAX_ROWS} rows are drawn at once.</p>"
            f'<div class="controls">{_controls()}</div><div id="ep-count" aria-live="polite"></div>'
            '<div id="ep-record" class="ep-record" hidden aria-live="polite"></div>'
            f'<div class="samples-wrap"><table class="ep-samples" id="ep-samples" data-max-rows="{MAX_ROWS}">'
            f"<thead><tr>{heads}</tr></thead><tbody></tbody></table></div>"
            f'<script type="application/json" id="ep-samples-data">{embed_json(rows)}</script></section>')
