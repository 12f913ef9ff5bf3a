"""Tables of finished runs (paper Tables 2–6) as pandas DataFrames, and their Markdown, CSV
and LaTeX renderings.

Input: the ``summary.json`` of one or more run directories. Rows: "No edit" (once per model
× dataset), then each method. When runs differ in ``preserve_previous`` (the K_p K_pᵀ term,
Table 6), method rows say which, and the ablation table sets the two side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..paths import write_text_atomic
from ..probes.base import ProbeOutcome
from .cells import FLAG_MARK, MARKS_KEY, NO_EDIT, TRAINED_MARK, csv_frame, notes, table_frame, text_rows, trained_marks
from .curves import write_curves
from .labels import preserve_differs, row_labeller
from .legends import legend_for
from ..runs.store import read_summary
from ..runs.summary import ResultRow, RunSummary, parse_summary
from .latex import tabular_table
from .battery import battery_table
from .seeds import seed_table

SETTINGS = ("PP", "PN", "NN", "NP")
DISCREPANCY_KEYS = ("PP-PN", "PP-NP", "NN-PN", "NN-NP")
# The paper writes a minus sign; the summary keys use ASCII.
DISCREPANCY_COLUMNS = tuple(k.replace("-", "−") for k in DISCREPANCY_KEYS)
# Leakage among successful edits (docs/protocol.md#leakage-among-successful-edits), each with
# its n: the records whose PP (NN) query hit.
CONDITIONAL_KEYS = ("PN|PP", "NP|NN")
CONDITIONAL_COUNTS = ("PP hits", "NN hits")
NEGATION_COLUMNS = ("Model", "Dataset", "Method", *SETTINGS, *DISCREPANCY_COLUMNS, "Avg",
                    *(c for pair in zip(CONDITIONAL_KEYS, CONDITIONAL_COUNTS) for c in pair))
FACTCHECK_COLUMNS = ("Model", "Dataset", "Method", "Eff", "Acc", "n", "Control", "Balanced")
ABLATION_COLUMNS = ("Model", "Dataset", "Method", "K_p", "PP", "PN", "NN", "NP", "PP−PN", "Avg")
CLASSIC_KEYS = ("Model", "Dataset", "Method")
COST_COLUMNS = ("Model", "Dataset", "Method", "edit s/request", "negation probe ms/query")
SETTINGS_COLUMNS = ("Model", "Dataset", "Method", "dtype", "C0 corpus", "C0 documents", "hparams file", "chosen by",
                    "intervals")
# Where LaTeX says it better than the escaped text: the preserved keys K_p K_pᵀ as math.
LATEX_HEADERS = {"K_p": r"$K_p$"}
LATEX_CAPTIONS = {"ablation": r"With and without the preserved keys $K_p K_p^{\top}$"}


def load_summaries(run_dirs: Sequence[str | Path]) -> list[RunSummary]:
    """The ``summary.json`` of each finished run, parsed, in the order given.

    Args:
        run_dirs: Run directories (what ``editprobe run --out`` wrote).

    Returns:
        One summary per directory, as the tables and the HTML report read them.

    Raises:
        ValueError: No directory given.
        UserError: A directory holds no readable ``summary.json`` (one line naming it).

    Examples:
        Not run here (it needs finished runs): ``load_summaries(["runs/memit", "runs/rome"])``;
        :func:`write_tables` shows them written as a report.
    """
    if not run_dirs:
        raise ValueError("give at least one run directory")
    return [parse_summary(read_summary(d), where=str(Path(d) / "summary.json")) for d in run_dirs]


def _no_edit_rows(summaries: Sequence[RunSummary], fields) -> list[dict[str, Any]]:
    """One "No edit" row per (model, dataset), from the first run that has it."""
    seen, rows = set(), []
    for s in summaries:
        for dk, d in s.datasets.items():
            key = (s.model, dk)
            if key not in seen:
                seen.add(key)
                row = fields(d)
                if row is not None:
                    rows.append({"Model": key[0], "Dataset": dk, "Method": NO_EDIT, **row})
    return rows


def _values(outcome: ProbeOutcome | None, keys: Sequence[str], columns: Sequence[str] | None = None) -> dict[str, Any]:
    """The metrics as cells (a Metric: its value, with its interval beside it in the table)."""
    return {c: (outcome.metrics.get(k) if outcome else None) for k, c in zip(keys, columns or keys)}


NEGATION_MARK_COLUMNS = dict(zip(DISCREPANCY_KEYS, DISCREPANCY_COLUMNS))


def _negation_values(outcome: ProbeOutcome | None) -> dict[str, Any]:
    conditional = {}
    for key, count in zip(CONDITIONAL_KEYS, CONDITIONAL_COUNTS):
        metric = outcome.metrics.get(key) if outcome else None
        conditional.update({key: metric, count: metric.n if metric else None})  # a Metric: with its interval
    return {**_values(outcome, SETTINGS), **_values(outcome, DISCREPANCY_KEYS, DISCREPANCY_COLUMNS),
            **_values(outcome, ("Avg",)), **conditional}


def negation_table(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """Table 2/3: PP, PN, NN, NP, the discrepancies and their Avg (the mean of those that
    exist: PP−PN alone on the No edit row and on runs edited positively only)."""
    label = row_labeller(summaries)
    # No "No edit" row where it has no number (zsRE read toward answers[0] has no old object: the paper's A.7)
    rows = _no_edit_rows(summaries, lambda d: _negation_values(o) if (o := d.no_edit.get("negation")) and o.metrics
                         else None)
    for s in summaries:
        for r in s.results:
            rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r),
                         **_negation_values(r.probes.get("negation")),
                         MARKS_KEY: trained_marks(r, "negation", NEGATION_MARK_COLUMNS)})
    return _ordered(rows, NEGATION_COLUMNS)


def _factcheck_values(outcome: ProbeOutcome | None) -> dict[str, Any] | None:
    if outcome is None:
        return None
    acc = outcome.metrics.get("Acc")
    return {**_values(outcome, ("Eff", "Acc")), "n": acc.n if acc else None, **_values(outcome, ("Control", "Balanced"))}


def factcheck_table(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """Tables 4/5: Eff (PP of the same edited model) beside fact-check Acc, and the control;
    the No edit row over the records whose old object the unedited model knows (Eff 100)."""
    label = row_labeller(summaries)
    rows = _no_edit_rows(summaries, lambda d: _factcheck_values(d.no_edit.get("factcheck")))
    flag_notes: dict[str, None] = {}
    for s in summaries:
        for r in s.results:
            values = _factcheck_values(r.probes.get("factcheck"))
            if values is not None:
                marks = trained_marks(r, "factcheck")
                flag = r.probes["factcheck"].details.get("flag")
                if flag:  # the model cannot speak to it: Acc carries the flag
                    marks = {**marks, "Acc": marks.get("Acc", "") + FLAG_MARK}
                    flag_notes.setdefault(f"{FLAG_MARK} fact-check ({s.model}, {r.dataset}): {flag}")
                rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r), **values, MARKS_KEY: marks})
    return table_frame(rows, FACTCHECK_COLUMNS, ("n", *CONDITIONAL_COUNTS), list(flag_notes))


def ablation_table(summaries: Sequence[RunSummary]) -> pd.DataFrame | None:
    """Table 6: each method with and without the K_p K_pᵀ term; None when the runs do not
    differ in it (there is nothing to compare)."""
    if not preserve_differs(summaries):
        return None
    # Only what is compared: a method on a dataset run both with and without K_p.
    label = row_labeller(summaries, mark_preserve=False)
    values: dict[tuple[str, str, str], set[bool]] = {}
    for s in summaries:
        for r in s.results:
            if r.preserve_previous is not None:
                values.setdefault((s.model, r.dataset, label(s, r)), set()).add(r.preserve_previous)
    rows = [{"Model": s.model, "Dataset": r.dataset, "Method": label(s, r),
             "K_p": "with" if r.preserve_previous else "without",
             **_values(r.probes.get("negation"), ("PP", "PN", "NN", "NP", "PP-PN", "Avg"),
                       ("PP", "PN", "NN", "NP", "PP−PN", "Avg")),
             MARKS_KEY: trained_marks(r, "negation", NEGATION_MARK_COLUMNS)}
            for s in summaries for r in s.results if len(values.get((s.model, r.dataset, label(s, r)), ())) == 2]
    rows.sort(key=lambda row: (row["Model"], row["Dataset"], row["Method"], row["K_p"]))  # stable
    return _ordered(rows, ABLATION_COLUMNS)


def _classic_cells(outcomes: dict[str, ProbeOutcome], legend: dict[str, str]) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for name, outcome in outcomes.items():
        if outcome.table != "classic":
            continue
        for key, metric in outcome.metrics.items():
            column = f"{name} {key}"
            cells[column] = metric
            legend.setdefault(column, f"{metric.label} ({metric.unit})")
    return cells


def classic_table(summaries: Sequence[RunSummary]) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """The classic metrics (every probe outside the negation and fact-check tables): one
    column per metric, and a legend of each column's protocol. None when no run has any."""
    legend: dict[str, str] = {}
    rows = _no_edit_rows(summaries, lambda d: _classic_cells(d.no_edit, legend) or None)
    label = row_labeller(summaries)
    for s in summaries:
        for r in s.results:
            cells = _classic_cells(r.probes, legend)
            if cells:
                marks = {f"{name} {key}": TRAINED_MARK for name, keys in r.trained_cells.items() for key in keys}
                rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r), **cells,
                             MARKS_KEY: marks})
    if not legend:
        return None
    return _ordered(rows, (*CLASSIC_KEYS, *legend)), legend


def _c0_documents(c0: dict[str, Any] | None) -> str | None:
    """Documents the C0 statistics read (the fewest over the layers) of those asked for."""
    if not c0 or not c0.get("documents"):
        return None
    read = min(c0["documents"].values())
    return f"{read} of {c0['asked']}" if c0.get("asked") is not None else str(read)


def _c0_corpus(c0: dict[str, Any]) -> str | None:
    """The C0 corpus and, for a seeded sample, how it was drawn (no mark: its first documents,
    as every run made before sampling existed read them)."""
    corpus, sample = c0.get("corpus"), c0.get("sample")
    if corpus is None or sample in (None, "first"):
        return corpus
    return f"{corpus} ({sample} sample, seed {c0.get('seed')})"


def settings_table(summaries: Sequence[RunSummary]) -> pd.DataFrame:
    """What a reader needs to trust a row: the model dtype, where C0 came from and how many
    documents it read, and the hparams file (and why that one)."""
    label = row_labeller(summaries)
    rows = []
    for s in summaries:
        for r in s.results:
            c0, hp_file = r.c0 or {}, r.hparams_file or {}
            rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r),
                         "dtype": s.model_dtype, "C0 corpus": _c0_corpus(c0), "C0 documents": _c0_documents(r.c0),
                         "hparams file": hp_file.get("file"), "chosen by": hp_file.get("chosen_by"),
                         "intervals": _interval_settings(s), "targets": _targets(s, r.dataset),
                         "checkpoint sha256": (r.hparams or {}).get("fingerprint")})
    # Only a report with zsRE rows says what they were edited toward; only one with an
    # evaluated checkpoint (editprobe evaluate) shows its fingerprint.
    columns = SETTINGS_COLUMNS + tuple(c for c in ("targets", "checkpoint sha256") if any(row[c] for row in rows))
    return _ordered(rows, columns)


def _interval_settings(summary: RunSummary) -> str | None:
    """How the row's intervals were drawn (None: a summary written before intervals)."""
    drawn = summary.intervals
    if not drawn:
        return None
    return f"95% bootstrap, seed {drawn.get('seed')}, {drawn.get('resamples')} resamples; Wilson for proportions"


def _targets(summary: RunSummary, dataset: str) -> str | None:
    """What a dataset's zsRE records were edited toward; a summary written before the option
    existed edited them toward alt."""
    found = summary.datasets.get(dataset)
    if found is not None and found.targets:
        return found.targets
    if "zsre_target" not in summary.config and found is not None and _question_dataset(found):
        return "zsRE alt, answers[0] as the old object (written before zsre_target)"
    return None


def _question_dataset(dataset) -> bool:
    """A dataset scored with token accuracy (questions, or no old object): zsRE-like."""
    efficacy = dataset.no_edit.get("efficacy")
    return efficacy is not None and "tokens" in efficacy.metrics


def _per(value: float | None, count: int) -> float | None:
    return round(value / count, 3) if value is not None and count else None


def cost_table(summaries: Sequence[RunSummary]) -> pd.DataFrame | None:
    """What a row costs: editing seconds per request (the positive run's batches) and the
    negation probe's milliseconds per query on the positively edited model (PP and PN, 2 per
    record; an in-context editor pays for its longer prompts here). None when no run
    recorded timings."""
    rows, seen, label = [], set(), row_labeller(summaries)
    for s in summaries:
        timings = s.timings or {}
        batches, probes = timings.get("batches") or {}, timings.get("probes") or {}
        for dk, d in s.datasets.items():
            base = (probes.get(f"{dk}__baseline") or {}).get("negation")
            if base is not None and (s.model, dk) not in seen:  # one "No edit" row per model and dataset
                seen.add((s.model, dk))
                rows.append({"Model": s.model, "Dataset": dk, "Method": NO_EDIT, "edit s/request": None,
                             "negation probe ms/query": _per(1000 * base, 2 * d.n_records)})
        for r in s.results:
            stage = f"{r.dataset}__{r.method}__positive"
            n = s.datasets[r.dataset].n_records if r.dataset in s.datasets else 0
            edit = sum(batches[stage].values()) if stage in batches else None
            probe = (probes.get(stage) or {}).get("negation")
            rows.append({"Model": s.model, "Dataset": r.dataset, "Method": label(s, r),
                         "edit s/request": _per(edit, n), "negation probe ms/query": _per(None if probe is None else 1000 * probe, 2 * n)})
    if not rows:
        return None
    return _ordered(rows, COST_COLUMNS)


def _ordered(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    return table_frame(rows, columns, ("n", *CONDITIONAL_COUNTS))


def _numeric(df: pd.DataFrame, column: str) -> bool:
    return pd.api.types.is_numeric_dtype(df[column])


# --- rendering: every cell as cells.py writes it (a metric: "97.0 [93.1, 99.4]") ------------
def _md_escape(text: str) -> str:
    return text.replace("|", r"\|")  # PN|PP is one cell, not two


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (own writer: pandas needs the optional tabulate for this)."""
    header = "| " + " | ".join(_md_escape(str(c)) for c in df.columns) + " |"
    align = "|" + "|".join("---:" if _numeric(df, c) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(_md_escape(cell) for cell in row) + " |" for row in text_rows(df)]
    below = [""] + notes(df) if notes(df) else []  # what the table's marks mean
    return "\n".join([header, align, *body, *below]) + "\n"


def to_latex(df: pd.DataFrame, caption: str, legend: dict[str, str] | None = None,
             caption_tex: str | None = None) -> str:
    """A booktabs table float that compiles whatever the runs are named (every special
    character escaped, symbols as LaTeX: :mod:`editprobe.report.latex`); ``legend`` below it.
    Own writer, so the output does not depend on pandas' Styler."""
    spec = "".join("r" if _numeric(df, c) else "l" for c in df.columns)
    return tabular_table(list(df.columns), text_rows(df), spec, caption, legend, caption_tex, LATEX_HEADERS,
                         notes(df))


def legend_markdown(legend: dict[str, str]) -> str:
    return "".join(f"- **{column}**: {label}\n" for column, label in legend.items())


def all_tables(summaries: Sequence[RunSummary], run_dirs: Sequence[str | Path] | None = None
               ) -> list[tuple[str, str, pd.DataFrame, dict[str, str] | None]]:
    """(name, caption, table, legend) of every table the runs have; ``run_dirs`` (each
    summary's directory, in order) lets the seeds table pool the runs' per-record values."""
    tables: list[tuple[str, str, pd.DataFrame, dict[str, str] | None]] = [
        ("negation", "Negated queries: exact match (%) and discrepancies", negation_table(summaries), None),
        ("factcheck", "Fact-checking: efficacy (PP) and accuracy (%)", factcheck_table(summaries), None)]
    ablation = ablation_table(summaries)
    if ablation is not None:
        tables.append(("ablation", "With and without the preserved keys K_p K_p^T", ablation, None))
    classic = classic_table(summaries)
    if classic is not None:
        tables.append(("classic", "Classic edit metrics (each column's protocol below)", *classic))
    battery = battery_table(summaries)
    if battery is not None:
        tables.append(("battery", "Shortcut battery: grounded efficacy first, then each probe (protocols below)",
                       *battery))
    cost = cost_table(summaries)
    if cost is not None:
        tables.append(("cost", "Cost: editing seconds per request, negation-probe milliseconds per query", cost, None))
    seeds = seed_table(summaries, run_dirs)
    if seeds is not None:
        tables.append(("seeds", "Over seeds: mean and standard deviation of each metric (runs that differ only by "
                       "seed); the mean's 95% interval covers the sampling of records", seeds, None))
    tables.append(("settings", "Settings of each row: model dtype, C0 corpus and documents read, hparams file",
                   settings_table(summaries), None))
    # The fixed tables' legends (legends.py), one text for every output.
    return [(name, caption, df, legend if legend is not None else legend_for(name, df))
            for name, caption, df, legend in tables]


def write_tables(summaries: Sequence[RunSummary], out: str | Path,
                 run_dirs: Sequence[str | Path] | None = None) -> str:
    """Write ``<name>.md/.csv/.tex`` for every table into the report directory ``out`` (an
    editprobe ``report`` directory: the tables of an earlier report there are replaced, a
    user's own files kept), and the curves over edits where runs have them (curves.py);
    what ``editprobe report RUN... --out DIR`` does.

    Args:
        summaries: The runs' summaries (:func:`load_summaries`).
        out: The report directory (created).
        run_dirs: The runs' directories, in the order of ``summaries``: with them the
            tables that read per-record results (seeds) are written too. As :func:`all_tables`.

    Returns:
        The Markdown of every table, as ``editprobe report`` prints it.

    Raises:
        UserError: ``out`` is not a report directory editprobe wrote, or another process
            is writing it.

    Examples:
        Not run here (they need finished runs):

        ```python
        from editprobe.report import load_summaries, write_tables
        runs = ["runs/memit", "runs/alphaedit"]
        markdown = write_tables(load_summaries(runs), "report", run_dirs=runs)
        ```
    """
    from ..workdir import WorkDir

    tables = all_tables(summaries, run_dirs)
    work = WorkDir(out, "report")
    parts = []
    with work.hold():
        work.clear()  # an earlier report's tables, some of which this one may not have
        work.own(*(f"{name}.{ext}" for name, *_ in tables for ext in ("md", "csv", "tex")))
        for name, caption, df, legend in tables:
            md = to_markdown(df) + (f"\n{legend_markdown(legend)}" if legend else "")
            write_text_atomic(work.root / f"{name}.md", md)
            write_text_atomic(work.root / f"{name}.csv", csv_frame(df).to_csv(index=False, na_rep=""))
            write_text_atomic(work.root / f"{name}.tex", to_latex(df, caption, legend, LATEX_CAPTIONS.get(name)))
            parts.append(f"### {caption}\n\n{md}")
        curves = write_curves(summaries, work.root, work.own)  # "" (and no file) when no run has a curve
    return "\n".join(parts + ([curves] if curves else []))
