"""Report: tables of finished runs (Markdown, CSV, LaTeX) and the HTML page."""

from .tables import (
    ablation_table, all_tables, classic_table, factcheck_table, load_summaries, negation_table, to_latex,
    to_markdown, write_tables,
)

__all__ = ["ablation_table", "all_tables", "classic_table", "factcheck_table", "load_summaries", "negation_table",
           "to_latex", "to_markdown", "write_tables"]
