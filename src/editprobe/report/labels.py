"""How every report output names a row: the method (``+variant``), and K_p and the seed only
where the runs it reads differ in them, so that two rows are never told apart by position."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..runs.summary import ResultRow, RunSummary


def preserve_differs(summaries: Sequence[RunSummary]) -> bool:
    return len({r.preserve_previous for s in summaries for r in s.results} - {None}) > 1


def seeds_differ(summaries: Sequence[RunSummary]) -> bool:
    return len({s.seed for s in summaries}) > 1


def method_label(result: ResultRow, mark_preserve: bool, seed: int | None = None) -> str:
    """The row's method, K_p said when the runs differ in it, its ``seed`` when given (the
    runs differ in seed: two seeds' rows are told apart)."""
    name = f"{result.method}+{result.variant}" if result.variant else result.method
    if mark_preserve and result.preserve_previous is not None:  # None: K_p does not apply (ROME)
        name = f"{name} ({'with' if result.preserve_previous else 'no'} K_p)"
    return name if seed is None else f"{name} (seed {seed})"


def row_labeller(summaries: Sequence[RunSummary], mark_preserve: bool | None = None
                 ) -> Callable[[RunSummary, ResultRow], str]:
    """``label(summary, result)`` of every per-run output: the method, K_p and seed marked only
    where the runs differ in them (``mark_preserve`` False: never K_p)."""
    mark = preserve_differs(summaries) if mark_preserve is None else mark_preserve
    seeds = seeds_differ(summaries)
    return lambda s, r: method_label(r, mark, s.seed if seeds else None)
