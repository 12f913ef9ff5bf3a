"""Runs that differ only by seed, aggregated (docs/protocol.md#seeds): per metric of each
(model, dataset, method) the mean and the standard deviation over the seeds, with their number.

Runs are grouped by their config without the fields a seed study changes or that do not
change the numbers (``seed``, ``out``, ``device``, ``checkpoint_every``, ``target_cache``); a
group with at least two distinct seeds gets rows. The table is long (one row per metric),
so it holds every probe's metrics, whichever the runs measured.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from typing import Any

import pandas as pd

from ..runs.summary import ResultRow, RunSummary

# Config fields that do not make two runs different experiments for this table.
NOT_THE_EXPERIMENT = frozenset({"seed", "out", "device", "checkpoint_every", "target_cache"})
SEED_COLUMNS = ("Model", "Dataset", "Method", "Metric", "seeds", "mean", "sd")


def _experiment(summary: RunSummary, result: ResultRow) -> tuple[Any, ...]:
    config = {k: v for k, v in summary.config.items() if k not in NOT_THE_EXPERIMENT}
    return (json.dumps(config, sort_keys=True, default=str), summary.model, result.dataset, result.method,
            result.variant, result.preserve_previous)


def _label(result: ResultRow, mark_preserve: bool) -> str:
    """As the other tables name the row (K_p said only when the runs differ in it)."""
    name = f"{result.method}+{result.variant}" if result.variant else result.method
    if not mark_preserve or result.preserve_previous is None:
        return name
    return f"{name} ({'with' if result.preserve_previous else 'no'} K_p)"


def _metric_rows(model: str, members: list[tuple[int, ResultRow]], mark_preserve: bool) -> list[dict[str, Any]]:
    first = members[0][1]
    names = [(probe, key) for probe, outcome in first.probes.items() for key in outcome.metrics]
    rows = []
    for probe, key in names:
        metrics = [m for _, r in members if (o := r.probes.get(probe)) and (m := o.metrics.get(key)) is not None]
        values = [m.value for m in metrics if m.value is not None]
        if not values:
            continue
        row = {"Model": model, "Dataset": first.dataset, "Method": _label(first, mark_preserve), "Metric": f"{probe} {key}",
               "seeds": len(values), "mean": statistics.fmean(values),
               "sd": statistics.stdev(values) if len(values) > 1 else None}
        rows.append(row)
    return rows


def seed_table(summaries: Sequence[RunSummary]) -> pd.DataFrame | None:
    """Mean and sample standard deviation (n − 1) over the seeds of each metric, for the runs
    that differ only by seed; ``seeds`` counts the runs with a value. None when no two runs do."""
    groups: dict[tuple[Any, ...], list[tuple[int, ResultRow]]] = {}
    for summary in summaries:
        for result in summary.results:
            groups.setdefault(_experiment(summary, result), []).append((summary.seed, result))
    mark = len({r.preserve_previous for s in summaries for r in s.results} - {None}) > 1
    rows: list[dict[str, Any]] = []
    for key, members in groups.items():
        if len({seed for seed, _ in members}) > 1:
            rows += _metric_rows(key[1], members, mark)
    if not rows:
        return None
    columns = SEED_COLUMNS + (("lo", "hi") if any("lo" in row for row in rows) else ())
    return pd.DataFrame(rows, columns=list(columns))
