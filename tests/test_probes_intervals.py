"""The metrics' 95% intervals (probes/intervals.py, docs/statistics.md): the bootstrap against a
hand computation, paired against unpaired, Wilson against known bounds, the probes' metrics
carrying them, and the one display convention."""

from __future__ import annotations

import numpy as np
import pytest

from editprobe.probes.base import Metric
from editprobe.probes.builtin.negation import discrepancy_metrics
from editprobe.probes.intervals import (
    BOOTSTRAP_SEED, RESAMPLES, bootstrap, paired, paired_means, percentile_interval, shown, wilson)

VALUES = [1.0, 0.0, 1.0, 1.0, 0.5, 0.0, 1.0, 1.0, 0.25, 1.0]


def test_the_bootstrap_is_the_textbook_percentile_bootstrap_recomputed_by_hand():
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    idx = rng.integers(0, len(VALUES), size=(RESAMPLES, len(VALUES)))
    by_hand = np.asarray(VALUES)[idx].mean(axis=1)
    draws = paired_means({"x": {str(i): v for i, v in enumerate(VALUES)}})["x"]
    np.testing.assert_allclose(draws, by_hand, rtol=0, atol=1e-12)
    lo, hi = np.percentile(100 * by_hand, [2.5, 97.5])
    assert bootstrap(VALUES) == (round(lo, 1), round(hi, 1))
    assert bootstrap(VALUES)[0] < 100 * np.mean(VALUES) < bootstrap(VALUES)[1]
    assert bootstrap(VALUES) == bootstrap(list(VALUES))  # seeded: the same every time
    assert bootstrap([]) is None


def test_paired_and_unpaired_differ_where_the_records_are_correlated():
    # Two measurements of the same 40 records that agree on all but 4: their difference
    # (10 points) is far surer paired than when each side is drawn on its own.
    a = {f"r{i}": float(i % 2) for i in range(40)}
    b = {**a, **{f"r{i}": 0.0 for i in (1, 3, 5, 7)}}
    diff = paired({"a": a, "b": b}, lambda m: m["a"] - m["b"])
    ma = paired_means({"a": a})["a"]
    mb = paired_means({"b": b}, seed=BOOTSTRAP_SEED + 1)["b"]  # independent draws: unpaired
    unpaired = percentile_interval(ma - mb)
    assert diff[0] <= 10.0 <= diff[1] and unpaired[0] <= 10.0 <= unpaired[1]
    assert diff[1] - diff[0] < (unpaired[1] - unpaired[0]) / 2
    assert diff[0] >= 0.0 > unpaired[0]  # paired: never below 0 (a is never below b on a record)


def test_a_series_missing_records_averages_over_those_it_has():
    means = paired_means({"a": {"x": 1.0, "y": 0.0}, "b": {"y": 1.0}}, resamples=50)
    assert set(np.unique(means["b"][np.isfinite(means["b"])])) == {1.0}
    assert np.isnan(means["b"]).any()  # resamples without y: no b


@pytest.mark.parametrize("hits, n, expected", [(0, 10, (0.0, 27.8)), (10, 10, (72.2, 100.0)), (5, 10, (23.7, 76.3))])
def test_wilson_bounds_against_known_values(hits, n, expected):
    assert wilson(hits, n) == expected
    assert wilson(0, 0) is None


@pytest.mark.parametrize("hits, n", [(81, 263), (1, 40), (39, 40)])
def test_wilson_is_the_closed_form(hits, n):
    z, p = 1.959963984540054, hits / n
    centre, half = p + z * z / (2 * n), z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    by_hand = tuple(round(100 * (centre + sign * half) / (1 + z * z / n), 1) for sign in (-1, 1))
    assert wilson(hits, n) == by_hand


def test_the_probes_metrics_carry_their_intervals():
    m = Metric.mean(VALUES, "label")
    assert (m.lo, m.hi) == bootstrap(VALUES) and m.value == 67.5
    binary = Metric.mean([1.0] * 9 + [0.0], "label")  # 0/1 outcomes: a proportion, Wilson
    assert (binary.value, binary.lo, binary.hi) == (90.0, *wilson(9, 10))
    assert Metric.mean([1.0] * 10, "label").lo == wilson(10, 10)[0] < 100.0  # not the bootstrap's [100, 100]
    from editprobe.probes.results import Score

    s = Metric.of_score(Score(probe="p", probe_version=1, label="l", hits=5, n=10))
    assert (s.value, s.lo, s.hi) == (50.0, 23.7, 76.3)
    per_record = {"PP": {f"r{i}": 1.0 for i in range(20)}, "PN": {f"r{i}": float(i < 5) for i in range(20)}}
    out = discrepancy_metrics({}, {"PP": 100.0, "PN": 25.0}, per_record)
    assert out["PP-PN"].value == 75.0 and out["PP-PN"].lo < 75.0 < out["PP-PN"].hi
    assert (out["Avg"].lo, out["Avg"].hi) == (out["PP-PN"].lo, out["PP-PN"].hi)  # one difference: Avg = it
    assert discrepancy_metrics({}, {"PP": 100.0, "PN": 25.0})["PP-PN"].lo is None  # no per-record values


def test_one_display_convention():
    assert shown(97.0, 93.1, 99.4) == "97.0 [93.1, 99.4]"
    assert shown(97.0, None, None) == "97.0 [–]"
    assert shown(None, 1.0, 2.0) == "–"
