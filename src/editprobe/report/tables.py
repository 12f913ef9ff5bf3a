"""Tables of finished runs (paper Tables 2–6) as pandas DataFrames, and their Markdown, CSV
and LaTeX renderings.

Input: the ``summary.json`` of one or more run directories. Rows: "No edit" (once per model
× dataset), then each method. When runs differ in ``preserve_previous`` (the K_p K_pᵀ term,
Table 6), method rows say which, and the ablation table sets the two side by side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..paths import write_text_atomic
from ..runs.store import read_summary

SETTINGS = ("PP", "PN", "NN", "NP")
DISCREPANCY_KEYS = ("PP-PN", "PP-NP", "NN-PN", "NN-NP")
# The paper writes a minus sign; the summary keys use ASCII.
DISCREPANCY_COLUMNS = tuple(k.replace("-", "−") for k in DISCREPANCY_KEYS)
NEGATION_COLUMNS = ("Model", "Dataset", "Method", *SETTINGS, *DISCREPANCY_COLUMNS, "Avg")
FACTCHECK_COLUMNS = ("Model", "Dataset", "Method", "Eff", "Acc", "n", "Control")
ABLATION_COLUMNS = ("Model", "Dataset", "Method", "K_p", "PP", "PN", "NN", "NP", "Avg")
NO_EDIT = "No edit"


def load_summaries(run_dirs: Sequence[str | Path]) -> list[dict[str, Any]]:
    if not run_dirs:
        raise ValueError("give at least one run directory")
    return [read_summary(d) for d in run_dirs]


def _preserve_differs(summaries: Sequence[dict[str, Any]]) -> bool:
    return len({r.get("preserve_previous") for s in summaries for r in s["results"]}) > 1


def _method_label(result: dict[str, Any], mark_preserve: bool) -> str:
    if not mark_preserve:
        return result["method"]
    return f"{result['method']} ({'with' if result.get('preserve_previous') else 'no'} K_p)"


def _no_edit_rows(summaries: Sequence[dict[str, Any]], fields) -> list[dict[str, Any]]:
    """One "No edit" row per (model, dataset), from the first run that has it."""
    seen, rows = set(), []
    for s in summaries:
        for dk, d in s["datasets"].items():
            key = (s["config"]["model"], dk)
            if key not in seen:
                seen.add(key)
                rows.append({"Model": key[0], "Dataset": dk, "Method": NO_EDIT, **fields(d)})
    return rows


def negation_table(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Table 2/3: PP, PN, NN, NP, the discrepancies and their Avg; No edit has PP and PN."""
    mark = _preserve_differs(summaries)
    rows = _no_edit_rows(summaries, lambda d: {"PP": d["no_edit"]["PP"], "PN": d["no_edit"]["PN"]})
    for s in summaries:
        for r in s["results"]:
            neg = r["negation"]
            rows.append({"Model": s["config"]["model"], "Dataset": r["dataset"], "Method": _method_label(r, mark),
                         **{k: neg[k] for k in SETTINGS},
                         **{c: neg[k] for k, c in zip(DISCREPANCY_KEYS, DISCREPANCY_COLUMNS)}, "Avg": neg["Avg"]})
    return _ordered(rows, NEGATION_COLUMNS)


def factcheck_table(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """Tables 4/5: Eff (PP of the same edited model) beside fact-check Acc, and the control."""
    mark = _preserve_differs(summaries)
    rows = _no_edit_rows(summaries, lambda d: {"Acc": d["factcheck_no_edit"]["Acc"],
                                               "n": d["factcheck_no_edit"]["n"]})
    for s in summaries:
        for r in s["results"]:
            fc = r["factcheck"]
            rows.append({"Model": s["config"]["model"], "Dataset": r["dataset"], "Method": _method_label(r, mark),
                         "Eff": fc["Eff"], "Acc": fc["Acc"], "n": fc["n"], "Control": fc["Control"]})
    return _ordered(rows, FACTCHECK_COLUMNS)


def ablation_table(summaries: Sequence[dict[str, Any]]) -> pd.DataFrame | None:
    """Table 6: each method with and without the K_p K_pᵀ term; None when the runs do not
    differ in it (there is nothing to compare)."""
    if not _preserve_differs(summaries):
        return None
    rows = [{"Model": s["config"]["model"], "Dataset": r["dataset"], "Method": r["method"],
             "K_p": "with" if r.get("preserve_previous") else "without",
             **{k: r["negation"][k] for k in ("PP", "PN", "NN", "NP", "Avg")}}
            for s in summaries for r in s["results"]]
    df = _ordered(rows, ABLATION_COLUMNS)
    return df.sort_values(["Model", "Dataset", "Method", "K_p"], kind="stable").reset_index(drop=True)


def _ordered(rows: list[dict[str, Any]], columns: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(columns))
    if "n" in df.columns:  # counts stay integers even where a row has none
        df["n"] = df["n"].astype("Int64")
    return df


def _numeric(df: pd.DataFrame, column: str) -> bool:
    return pd.api.types.is_numeric_dtype(df[column])


# --- rendering ------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return "–"  # not applicable / not computed, never 0
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table (own writer: pandas needs the optional tabulate for this)."""
    header = "| " + " | ".join(df.columns) + " |"
    align = "|" + "|".join("---:" if _numeric(df, c) else "---" for c in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([header, align, *body]) + "\n"


def to_latex(df: pd.DataFrame, caption: str) -> str:
    """A booktabs tabular; own writer, so the output does not depend on pandas' Styler."""
    def esc(text: str) -> str:
        for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                     ("−", "$-$"), ("–", "--")):
            text = text.replace(a, b)
        return text

    spec = "".join("r" if _numeric(df, c) else "l" for c in df.columns)
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{esc(caption)}}}", f"\\begin{{tabular}}{{{spec}}}",
             r"\toprule", " & ".join(esc(c) for c in df.columns) + r" \\", r"\midrule"]
    lines += [" & ".join(esc(_cell(v)) for v in row) + r" \\" for row in df.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def write_tables(summaries: Sequence[dict[str, Any]], out: str | Path) -> str:
    """Write <name>.md/.csv/.tex for every table under ``out``; return the Markdown of all."""
    out = Path(out)
    tables = [("negation", "Negated queries: exact match (%) and discrepancies", negation_table(summaries)),
              ("factcheck", "Fact-checking: efficacy (PP) and accuracy (%)", factcheck_table(summaries))]
    ablation = ablation_table(summaries)
    if ablation is not None:
        tables.append(("ablation", "With and without the preserved keys K_p K_p^T", ablation))
    parts = []
    for name, caption, df in tables:
        md = to_markdown(df)
        write_text_atomic(out / f"{name}.md", md)
        write_text_atomic(out / f"{name}.csv", df.to_csv(index=False, na_rep=""))
        write_text_atomic(out / f"{name}.tex", to_latex(df, caption))
        parts.append(f"### {caption}\n\n{md}")
    return "\n".join(parts)
