"""The statistics of ``report --compare`` (docs/statistics.md#is-a-better-than-b): the paired
difference of two rows' per-record values, its interval, a p-value, Holm's correction.

- The difference is A − B over the records both rows have (by record id), in the metrics'
  own unit (points for a % metric): the mean of the per-record differences.
- Its 95% interval: the percentile bootstrap over those records, both rows' values of a
  record drawn together (probes/intervals.py, same seed and resamples as every interval).
- Its p-value: **McNemar's exact test** when both are hit rates whose every value is a 0/100 outcome
  (the discordant records: a binomial test of A-only hits among them, p = 0.5), else a
  **paired sign-flip permutation test** (``scipy.stats.permutation_test``): under the null
  hypothesis of no difference each record's difference is as likely negative as positive; p is
  the share of sign assignments whose mean is at least as far from 0 as the observed one (every
  assignment while there are at most as many as the draws: exact; else seeded draws, as many
  as :func:`permutation_draws` gives for the table's number of lines). [choice] Not a bootstrap test: centred-bootstrap p-values are
  far too small on a few records (six equal differences gave 0.0005; the exact answer is 2/64).
- :func:`holm`: Holm's step-down adjustment over every test one report prints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..probes.intervals import BOOTSTRAP_SEED, RESAMPLES, paired_means, percentile_interval

MCNEMAR = "McNemar exact"
PERMUTATION_TEST = "paired permutation"
OUTCOMES = (0.0, 100.0)


@dataclass(frozen=True)
class PairedDifference:
    """A − B over the ``n`` shared records, its interval and its test."""

    n: int
    difference: float
    lo: float | None
    hi: float | None
    test: str
    p: float
    discordant: tuple[int, int] | None = None  # McNemar: (A-only hits, B-only hits)


def shared_records(a: Mapping[str, float], b: Mapping[str, float]) -> list[str]:
    """The record ids both rows have, in A's order."""
    return [rid for rid in a if rid in b]


def is_outcome(values: Sequence[float]) -> bool:
    """Every value a 0/100 outcome (a hit or a miss on a % scale)."""
    return all(v in OUTCOMES for v in values)


def mcnemar_p(a_only: int, b_only: int) -> float:
    """McNemar's exact (two-sided) p-value from the discordant pairs: a binomial test of
    ``a_only`` successes in ``a_only + b_only`` trials at 1/2; 1 when none is discordant."""
    if a_only + b_only == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(a_only, a_only + b_only, 0.5).pvalue)


def permutation_draws(n_tests: int) -> int:
    """The sign-flip draws of each permutation test in a table of ``n_tests`` lines. A test from
    B draws cannot give p below 2/(B + 1); Holm multiplies the smallest p by the number of
    lines, so with a fixed 2000 draws a table of 50 lines or more could never find a difference
    however large. 100 draws per line keep that floor, Holm-adjusted, at 0.02 (below 0.05)."""
    return max(RESAMPLES, 100 * n_tests)


def permutation_p(differences: Sequence[float], seed: int = BOOTSTRAP_SEED, resamples: int = RESAMPLES) -> float:
    """The two-sided sign-flip permutation p-value of a mean difference (1 when it is 0)."""
    from scipy.stats import permutation_test

    d = np.asarray(differences, dtype=np.float64)
    if not d.any():
        return 1.0
    found = permutation_test((d,), np.mean, permutation_type="samples", n_resamples=resamples,
                             alternative="two-sided", rng=np.random.default_rng(seed))
    return float(found.pvalue)


def paired_difference(a: Mapping[str, float], b: Mapping[str, float], unit: str = "%", digits: int = 1,
                      resamples: int = RESAMPLES) -> PairedDifference | None:
    """A − B over the records both have (None when they share none). McNemar's test where
    both are hit rates (``unit`` %) of 0/100 outcomes; a discrepancy's per-record values
    (points: −100, 0, 100) are differences, not outcomes, and get the permutation test."""
    ids = shared_records(a, b)
    if not ids:
        return None
    av, bv = [float(a[rid]) for rid in ids], [float(b[rid]) for rid in ids]
    differences = [x - y for x, y in zip(av, bv)]
    draws = paired_means({"A": dict(zip(ids, av)), "B": dict(zip(ids, bv))})
    lo, hi = percentile_interval(draws["A"] - draws["B"], 1.0, digits) or (None, None)
    mean = round(sum(differences) / len(differences), digits)
    if unit == "%" and is_outcome(av) and is_outcome(bv):
        a_only = sum(x > y for x, y in zip(av, bv))
        b_only = sum(y > x for x, y in zip(av, bv))
        return PairedDifference(len(ids), mean, lo, hi, MCNEMAR, mcnemar_p(a_only, b_only), (a_only, b_only))
    return PairedDifference(len(ids), mean, lo, hi, PERMUTATION_TEST, permutation_p(differences, resamples=resamples))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order: the k-th smallest p times
    (m − k + 1), made non-decreasing, capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
