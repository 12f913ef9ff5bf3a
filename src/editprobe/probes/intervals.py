"""95% intervals of the metrics (docs/statistics.md), computed from per-record values the probes
already hold: no model call, so a resumed run gives the same intervals.

- A plain proportion of one binary outcome per record (PP, PN, NN, NP, fact-check Acc and
  Control, the No-edit PN, a classic metric whose per-record values are all 0 or 1): the
  **Wilson score interval** (:func:`wilson`), exact enough at these sizes and, unlike the
  bootstrap, not degenerate at 0 % or 100 %.
- A mean of per-record values (the classic metrics, portability, multi-hop, fluency, the
  balanced fact-check accuracy): a **percentile bootstrap over records** (:func:`bootstrap`).
- A figure that combines measurements of the same records (the discrepancies PP−PN …, Avg):
  the **paired** bootstrap (:func:`paired_means`): one draw of record indices per resample,
  applied to every series, so what the records share cancels as it does in the figure.

The bootstrap is seeded (``BOOTSTRAP_SEED``) and uses ``RESAMPLES`` resamples; both are
recorded in every run summary (:func:`settings`) and printed in the report's settings table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

BOOTSTRAP_SEED = 0
RESAMPLES = 2000
LEVEL = 0.95
Interval = tuple[float, float]


def settings() -> dict[str, float | int]:
    """What a summary records of how its intervals were drawn."""
    return {"seed": BOOTSTRAP_SEED, "resamples": RESAMPLES, "level": LEVEL}


def _draws(n: int, seed: int, resamples: int) -> np.ndarray:
    """How often each of ``n`` records is drawn in each resample: (resamples, n) counts.
    The indices are ``default_rng(seed).integers(0, n, (resamples, n))``, the textbook draw
    (a test recomputes it by hand)."""
    idx = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    rows = np.repeat(np.arange(resamples), n)
    return np.bincount(rows * n + idx.ravel(), minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def paired_means(series: Mapping[str, Mapping[str, float]], seed: int = BOOTSTRAP_SEED,
                 resamples: int = RESAMPLES) -> dict[str, np.ndarray]:
    """Each series' mean in every resample, the records (keys: record ids) drawn once for all
    series: a record two series share is in or out of both together. A series that lacks a
    record averages over the drawn records it has (NaN when it has none of them)."""
    ids = list(dict.fromkeys(rid for values in series.values() for rid in values))
    if not ids:
        return {name: np.full(resamples, np.nan) for name in series}
    counts = _draws(len(ids), seed, resamples)
    out = {}
    for name, values in series.items():
        has = np.array([rid in values for rid in ids], dtype=np.float64)
        v = np.array([float(values.get(rid, 0.0)) for rid in ids])
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = (counts @ (v * has)) / (counts @ has)
    return out


def percentile_interval(draws: np.ndarray, scale: float = 100.0, digits: int = 1) -> Interval | None:
    """The central ``LEVEL`` percentile interval of bootstrap draws (×``scale``, rounded as the
    value is); None when no draw is a number."""
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return None
    tail = 100.0 * (1.0 - LEVEL) / 2.0
    lo, hi = np.percentile(scale * finite, [tail, 100.0 - tail])
    return round(float(lo), digits), round(float(hi), digits)


def bootstrap(values: Sequence[float], scale: float = 100.0, digits: int = 1, seed: int = BOOTSTRAP_SEED,
              resamples: int = RESAMPLES) -> Interval | None:
    """The percentile bootstrap interval of the mean of ``values`` (one per record)."""
    if not values:
        return None
    draws = paired_means({"x": {str(i): float(v) for i, v in enumerate(values)}}, seed, resamples)["x"]
    return percentile_interval(draws, scale, digits)


def paired(series: Mapping[str, Mapping[str, float]], statistic: Callable[[dict[str, np.ndarray]], np.ndarray],
           scale: float = 100.0, digits: int = 1) -> Interval | None:
    """The interval of ``statistic`` (of the series' resampled means, e.g. ``m["PP"] - m["PN"]``)
    under the paired bootstrap."""
    return percentile_interval(statistic(paired_means(series)), scale, digits)


def wilson(hits: int, n: int, digits: int = 1) -> Interval | None:
    """The Wilson score interval of ``hits``/``n``, in %; None when n == 0."""
    if n <= 0:
        return None
    from scipy.stats import binomtest  # scipy only when an interval is computed

    ci = binomtest(hits, n).proportion_ci(confidence_level=LEVEL, method="wilson")
    return round(float(100.0 * ci.low), digits), round(float(100.0 * ci.high), digits)


def shown(value: float | None, lo: float | None, hi: float | None, fmt: str = "{:.1f}") -> str:
    """The one display convention: ``97.0 [93.1, 99.4]``; ``97.0 [–]`` without an interval
    (a summary written before intervals, or a corpus-level figure), ``–`` without a value."""
    if value is None:
        return "–"
    if lo is None or hi is None:
        return f"{fmt.format(value)} [–]"
    return f"{fmt.format(value)} [{fmt.format(lo)}, {fmt.format(hi)}]"
