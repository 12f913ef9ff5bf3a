"""Runs that differ only by seed, aggregated (docs/protocol.md#seeds): per metric of each
(model, dataset, method) the mean and the standard deviation over the seeds, with their number.

Runs are grouped by their config without the fields a seed study changes or that do not
change the numbers (``seed``, ``out``, ``device``, ``checkpoint_every``, ``target_cache``); a
group with at least two distinct seeds gets rows. The table is long (one row per metric),
so it holds every probe's metrics, whichever the runs measured.

The mean gets a pooled 95% interval (:func:`pooled_interval`) where every seed's run kept the
metric's per-record values (``records.jsonl``): it covers the sampling of the records given
these seeds; the spread from seed to seed is the sd beside it.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..probes.base import Metric
from ..probes.intervals import Interval, paired_means, percentile_interval
from ..runs.records import has_record_values, read_record_values
from ..runs.summary import ResultRow, RunSummary
from .cells import INTERVALS, split_metrics
from .labels import method_label

# Config fields that do not make two runs different experiments for this table.
NOT_THE_EXPERIMENT = frozenset({"seed", "out", "device", "checkpoint_every", "target_cache"})
SEED_COLUMNS = ("Model", "Dataset", "Method", "Metric", "seeds", "mean", "sd")
# A row's metric in records.jsonl: (dataset, method, variant, preserve_previous, probe, metric).
RecordKey = tuple[str, str, str | None, bool | None, str, str]
RunRecords = Mapping[RecordKey, Mapping[str, float]]


def run_records(run_dir: str | Path | None) -> RunRecords | None:
    """The per-record values of a run's rows; None for a run finished before they were kept."""
    if run_dir is None or not has_record_values(run_dir):
        return None
    return {(v.dataset, v.method, v.variant, v.preserve_previous, v.probe, v.metric): v.values
            for v in read_record_values(run_dir)}


def pooled_interval(per_seed: Sequence[Mapping[str, float]]) -> Interval | None:
    """The 95% percentile bootstrap interval of the mean over seeds of each seed's mean
    (``per_seed``: record id -> value, one mapping per seed). Each resample draws the records
    by id once for every seed (:func:`~editprobe.probes.intervals.paired_means`): a record two
    seeds share is in or out of both. None when a seed has no values."""
    if not per_seed or not all(per_seed):
        return None
    draws = paired_means({str(i): values for i, values in enumerate(per_seed)})
    return percentile_interval(np.mean(np.vstack(list(draws.values())), axis=0), scale=1.0)


def _experiment(summary: RunSummary, result: ResultRow) -> tuple[Any, ...]:
    config = {k: v for k, v in summary.config.items() if k not in NOT_THE_EXPERIMENT}
    return (json.dumps(config, sort_keys=True, default=str), summary.model, result.dataset, result.method,
            result.variant, result.preserve_previous)


Member = tuple[int, ResultRow, RunRecords | None]  # a run's seed, its row, its per-record values


def _pooled_mean(mean: float, per_seed: list[Mapping[str, float] | None]) -> Metric:
    """The mean over seeds as a table cell: with its pooled interval (lo, hi; n: the records
    pooled) where every seed has per-record values, "[–]" otherwise."""
    found = [v for v in per_seed if v is not None]
    interval = pooled_interval(found) if len(found) == len(per_seed) else None
    lo, hi = interval or (None, None)
    n = len({rid for values in found for rid in values}) if interval else None
    return Metric(label="mean over seeds", value=mean, lo=lo, hi=hi, n=n)


def _metric_rows(model: str, members: list[Member], mark_preserve: bool) -> list[dict[str, Any]]:
    first = members[0][1]
    names = [(probe, key) for probe, outcome in first.probes.items() for key in outcome.metrics]
    rows = []
    for probe, key in names:
        found = [(m, r, records) for _, r, records in members
                 if (o := r.probes.get(probe)) and (m := o.metrics.get(key)) is not None and m.value is not None]
        if not found:
            continue
        values = [m.value for m, _, _ in found]
        per_seed = [None if records is None else records.get(
            (r.dataset, r.method, r.variant, r.preserve_previous, probe, key)) for _, r, records in found]
        rows.append({"Model": model, "Dataset": first.dataset, "Method": method_label(first, mark_preserve),
                     "Metric": f"{probe} {key}", "seeds": len(values),
                     "mean": _pooled_mean(statistics.fmean(values), per_seed),
                     "sd": statistics.stdev(values) if len(values) > 1 else None})
    return rows


def seed_table(summaries: Sequence[RunSummary], run_dirs: Sequence[str | Path] | None = None) -> pd.DataFrame | None:
    """Mean and sample standard deviation (n − 1) over the seeds of each metric, for the runs
    that differ only by seed; ``seeds`` counts the runs with a value. The mean's interval is
    pooled over records (:func:`pooled_interval`) from the runs' ``records.jsonl``
    (``run_dirs``: each summary's directory, in order; without them, or for a run that kept
    none, "[–]"). None when no two runs differ only by seed."""
    dirs = list(run_dirs) if run_dirs is not None else [None] * len(summaries)
    if len(dirs) != len(summaries):
        raise ValueError(f"{len(dirs)} run directories for {len(summaries)} summaries")
    groups: dict[tuple[Any, ...], list[tuple[int, ResultRow, int]]] = {}
    for i, summary in enumerate(summaries):
        for result in summary.results:
            groups.setdefault(_experiment(summary, result), []).append((summary.seed, result, i))
    mark = len({r.preserve_previous for s in summaries for r in s.results} - {None}) > 1
    read: dict[int, RunRecords | None] = {}  # each run's records.jsonl read once, and only when pooled

    def records(i: int) -> RunRecords | None:
        if i not in read:
            read[i] = run_records(dirs[i])
        return read[i]

    rows: list[dict[str, Any]] = []
    for key, members in groups.items():
        if len({seed for seed, _, _ in members}) > 1:
            rows += _metric_rows(key[1], [(seed, r, records(i)) for seed, r, i in members], mark)
    if not rows:
        return None
    plain, intervals = split_metrics(rows)
    df = pd.DataFrame(plain, columns=list(SEED_COLUMNS))
    df.attrs[INTERVALS] = intervals
    return df
