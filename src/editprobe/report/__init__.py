"""Report: tables of finished runs (Markdown, CSV, LaTeX)."""

from .tables import (
    ablation_table, factcheck_table, load_summaries, negation_table, to_latex, to_markdown, write_tables,
)

__all__ = ["ablation_table", "factcheck_table", "load_summaries", "negation_table", "to_latex", "to_markdown",
           "write_tables"]
