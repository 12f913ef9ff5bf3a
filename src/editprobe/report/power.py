"""How many edits are needed to detect a difference (docs/statistics.md#how-many-edits-do-you-need):
the power of McNemar's exact test, by simulation from the protocol's binomial model.

Each of ``n`` records is a hit of method A with probability ``p`` and of method B with
probability ``p + Δ``, independently (the two rows of a real comparison edit the same records
and are positively correlated, which makes the paired test stronger: the figures are
conservative). Power is the share of simulated comparisons in which McNemar's exact test
(report/paired.py) rejects at ``alpha``. Seeded: the same arguments give the same number.
"""

from __future__ import annotations

import numpy as np

POWER_SEED = 0
SIMULATIONS = 2000


def mcnemar_pvalues(a_only: np.ndarray, discordant: np.ndarray) -> np.ndarray:
    """McNemar's exact two-sided p-values, vectorized: under the null the A-only hits among
    the discordant records are Binomial(discordant, 1/2), symmetric, so the p-value is twice
    the smaller tail, capped at 1 (what scipy's ``binomtest(k, t).pvalue`` gives; a test
    checks it; 1 when nothing is discordant)."""
    from scipy.stats import binom

    lower = binom.cdf(a_only, discordant, 0.5)
    upper = binom.sf(a_only - 1, discordant, 0.5)
    return np.where(discordant > 0, np.minimum(1.0, 2.0 * np.minimum(lower, upper)), 1.0)


def mcnemar_power(n: int, p: float, delta: float, alpha: float = 0.05, simulations: int = SIMULATIONS,
                  seed: int = POWER_SEED) -> float:
    """The power of McNemar's exact test at ``alpha`` to detect B − A = ``delta`` (a
    proportion: 0.05 for 5 points) on ``n`` records whose A hit rate is ``p``."""
    if not (0.0 <= p <= 1.0 and 0.0 <= p + delta <= 1.0):
        raise ValueError(f"p={p} and p+delta={p + delta} must both be within 0..1")
    rng = np.random.default_rng(seed)
    a = rng.random((simulations, n)) < p
    b = rng.random((simulations, n)) < p + delta
    a_only = np.sum(a & ~b, axis=1)
    discordant = a_only + np.sum(b & ~a, axis=1)
    return float(np.mean(mcnemar_pvalues(a_only, discordant) < alpha))


def power_table(ns: tuple[int, ...] = (50, 100, 200, 500, 1000, 2000), deltas: tuple[float, ...] = (2, 5, 10, 20),
                p: float = 0.5, simulations: int = SIMULATIONS, seed: int = POWER_SEED) -> list[list[str]]:
    """Rows ``[n, power at each Δ (points), in %]``: the table of docs/statistics.md."""
    return [[str(n), *(f"{100 * mcnemar_power(n, p, d / 100, simulations=simulations, seed=seed):.0f}"
                       for d in deltas)] for n in ns]
