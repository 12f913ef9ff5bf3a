"""The intervals' cost (docs/statistics.md): the paired bootstrap of 1000 records × the 14
metrics of a negation + classic row, against its floor measured beside it: the textbook
bootstrap (fancy-index the values with the same draws, mean per resample) of one metric,
times the metrics. No model: the intervals are computed from stored per-record values."""

from __future__ import annotations

import time

import numpy as np

from editprobe.probes.intervals import BOOTSTRAP_SEED, RESAMPLES, bootstrap, paired

from .table import Ratio

RECORDS = 1000
METRICS = 14  # PP, PN, NN, NP, 4 discrepancies, Avg; efficacy prob, magnitude, EM; Acc, Balanced
GOAL = 3.0


def _metrics(values: dict[str, dict[str, float]]) -> None:
    for setting in ("PP", "PN", "NN", "NP"):
        bootstrap(list(values[setting].values()))
    for a, b in (("PP", "PN"), ("PP", "NP"), ("NN", "PN"), ("NN", "NP")):
        paired({a: values[a], b: values[b]}, lambda m, a=a, b=b: m[a] - m[b])
    paired(values, lambda m: (m["PP"] - m["PN"] + m["PP"] - m["NP"] + m["NN"] - m["PN"] + m["NN"] - m["NP"]) / 4)
    for _ in range(METRICS - 9):
        bootstrap(list(values["PP"].values()))


def run(n: int = RECORDS) -> list[Ratio]:
    rng = np.random.default_rng(1)
    values = {s: {f"r{i}": float(x) for i, x in enumerate(rng.random(n) < p)}
              for s, p in (("PP", 0.95), ("PN", 0.7), ("NN", 0.9), ("NP", 0.8))}
    _metrics(values)  # warm: numpy's first calls
    started = time.perf_counter()
    _metrics(values)
    measured = time.perf_counter() - started
    started = time.perf_counter()
    x = np.asarray(list(values["PP"].values()))
    for _ in range(METRICS):
        x[np.random.default_rng(BOOTSTRAP_SEED).integers(0, n, size=(RESAMPLES, n))].mean(axis=1)
    floor = time.perf_counter() - started
    per = measured * 1000 / n / METRICS
    return [Ratio("intervals (bootstrap)", f"textbook bootstrap, {METRICS} metrics", measured, floor, GOAL,
                  f"{per * 1000:.2f} ms per 1000 records × metric ({RESAMPLES} resamples, {n} records)")]
