"""`report --compare A B` (report/compare.py, report/paired.py), the per-record values it pairs
(records.jsonl of a run), and the power table of docs/statistics.md (report/power.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import invoke
from scipy.stats import binomtest

from editprobe.report.compare import signed
from editprobe.report.paired import MCNEMAR, PERMUTATION_TEST, holm, mcnemar_p, paired_difference, permutation_p
from editprobe.report.power import mcnemar_power, mcnemar_pvalues

DOCS = Path(__file__).resolve().parents[1] / "docs" / "statistics.md"


# --- the statistics, by hand -----------------------------------------------------------------------
def test_paired_difference_and_interval_against_a_hand_computation():
    a = {"r0": 90.0, "r1": 40.0, "r2": 75.0, "r3": 10.0, "r4": 60.0, "x": 5.0}
    b = {"r0": 80.0, "r1": 45.0, "r2": 55.0, "r3": 10.0, "r4": 30.0, "y": 99.0}  # x, y: not shared
    found = paired_difference(a, b, unit="points")
    d = np.array([10.0, -5.0, 20.0, 0.0, 30.0])  # over r0..r4, in A's order
    assert found.n == 5 and found.difference == round(d.mean(), 1) == 11.0
    # The textbook paired bootstrap: record indices drawn once per resample for both rows.
    idx = np.random.default_rng(0).integers(0, 5, size=(2000, 5))
    lo, hi = np.percentile(d[idx].mean(axis=1), [2.5, 97.5])
    assert (found.lo, found.hi) == (round(lo, 1), round(hi, 1))
    # The sign-flip test, exact at 5 records: the 32 sign assignments of d, by hand.
    signs = np.array(np.meshgrid(*[[-1, 1]] * 5)).reshape(5, -1).T
    means = (signs * d).mean(axis=1)
    p = np.mean(np.abs(means) >= abs(d.mean()) - 1e-12)
    assert found.test == PERMUTATION_TEST and found.p == pytest.approx(p) == pytest.approx(8 / 32)
    assert permutation_p([0.0, 0.0, 0.0]) == 1.0
    assert permutation_p([50.0] * 6) == pytest.approx(2 / 64)  # six equal differences: exact, not 1/2001
    assert paired_difference({"a": 1.0}, {"b": 1.0}) is None  # no shared record


def test_mcnemar_on_outcomes_against_scipy_and_hand_values():
    # 8 shared records: A-only hits r0, B-only hits r1..r5, both hit r6, neither r7.
    a = {"r0": 100.0, "r1": 0.0, "r2": 0.0, "r3": 0.0, "r4": 0.0, "r5": 0.0, "r6": 100.0, "r7": 0.0}
    b = {"r0": 0.0, "r1": 100.0, "r2": 100.0, "r3": 100.0, "r4": 100.0, "r5": 100.0, "r6": 100.0, "r7": 0.0}
    found = paired_difference(a, b)
    assert found.test == MCNEMAR and found.discordant == (1, 5) and found.difference == -50.0
    assert found.p == pytest.approx(2 * (1 + 6) / 64)  # 2·P(X ≤ 1), X ~ Binomial(6, 1/2)
    assert found.p == pytest.approx(binomtest(1, 6, 0.5).pvalue)
    assert mcnemar_p(0, 5) == pytest.approx(2 / 32) and mcnemar_p(0, 0) == 1.0
    # A discrepancy's per-record values (points) are differences, not outcomes: the permutation test.
    assert paired_difference(a, b, unit="points").test == PERMUTATION_TEST
    # The power simulation's vectorized p-values are scipy's.
    k, t = np.array([0, 1, 3, 7, 12, 30]), np.array([0, 6, 6, 20, 24, 61])
    expected = [1.0] + [binomtest(int(x), int(n), 0.5).pvalue for x, n in zip(k[1:], t[1:])]
    assert mcnemar_pvalues(k, t) == pytest.approx(expected)


def test_holm_on_a_known_list():
    # sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 -> kept at 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == [1.0, 1.0] and holm([0.2, 0.01]) == pytest.approx([0.2, 0.02]) and holm([]) == []


def test_the_display_convention_shows_the_sign():
    assert signed(3.0, -1.2, 7.4) == "+3.0 [-1.2, 7.4]"
    assert signed(-2.5, -4.0, -1.0) == "-2.5 [-4.0, -1.0]" and signed(0.0, None, None) == "0.0 [–]"


# --- --compare on constructed runs ----------------------------------------------------------------
def _run_dir(root: Path, name: str, rows: dict[str, dict[str, dict[str, float]]],
             trained: dict[str, list[str]] | None = None) -> Path:
    """A finished run directory: method -> metric -> record id -> value (negation metrics);
    ``trained``: method -> the negation metrics whose query form it trained on."""
    d = root / name
    d.mkdir()
    metric = {"value": 0.0, "n": 1, "label": "x"}
    summary = {"schema_version": 2, "config": {"model": "m"}, "datasets": {"d": {"n_records": 40}},
               "results": [{"dataset": "d", "method": m, "probes": {"negation": {
                   "probe": "negation", "version": 1, "table": "negation",
                   "metrics": {k: metric for k in metrics}}},
                   "trained_cells": {"negation": (trained or {}).get(m, [])}} for m, metrics in rows.items()]}
    (d / "summary.json").write_text(json.dumps(summary))
    lines = [{"dataset": "d", "method": m, "probe": "negation", "metric": k, "unit": "%", "values": v}
             for m, metrics in rows.items() for k, v in metrics.items()]
    (d / "records.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    return d


def _outcomes(hits: set[int], n: int = 40) -> dict[str, float]:
    return {f"r{i}": 100.0 if i in hits else 0.0 for i in range(n)}


def test_compare_finds_the_significant_metric_and_not_the_other(tmp_path):
    # PP: A hits 38 of 40, B 12 (every B hit also an A hit): 26 discordant, all A's.
    # PN: both 20 of 40, 4 discordant each way: no difference to detect.
    a = _run_dir(tmp_path, "a", {"memit": {"PP": _outcomes(set(range(38))), "PN": _outcomes(set(range(20)))}})
    b = _run_dir(tmp_path, "b", {"rome": {"PP": _outcomes(set(range(12))),
                                          "PN": _outcomes(set(range(4, 24)))}})
    out = tmp_path / "rep"
    result = invoke(["report", a, "--compare", "memit", f"{b}:rome", "--out", out])  # b: from the selector
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "compare.csv").set_index("metric")
    assert csv.loc["PP", "verdict"] == "A higher" and csv.loc["PP", "test"] == MCNEMAR
    assert csv.loc["PP", "difference"] == 65.0 and csv.loc["PP", "n"] == 40
    assert csv.loc["PP", "p"] == pytest.approx(binomtest(26, 26).pvalue)
    assert csv.loc["PN", "verdict"] == "no detectable difference" and csv.loc["PN", "difference"] == 0.0
    assert csv.loc["PN", "p"] == pytest.approx(binomtest(4, 8).pvalue)
    assert list(csv["p_holm"]) == pytest.approx(holm(list(csv["p"])))
    md = (out / "compare.md").read_text()
    assert md in result.stdout and "| d | memit | rome | negation PP | 40 | +65.0 [" in md
    assert "rome" in (out / "negation.md").read_text()  # the selector's run is in the tables too
    # Reversed, B is the higher one; the report without --compare writes no comparison.
    result = invoke(["report", a, b, "--compare", "rome", "memit", "--out", out])
    assert pd.read_csv(out / "compare.csv").set_index("metric").loc["PP", "verdict"] == "B higher"
    assert invoke(["report", a, b, "--out", out]).exit_code == 0 and not (out / "compare.md").exists()


def test_compare_marks_the_metrics_an_editor_trained_on(tmp_path):
    # A (as memit+defend) trained on the negated query: its PN line is marked, PP is not.
    a = _run_dir(tmp_path, "a", {"memit": {"PP": _outcomes(set(range(30))), "PN": _outcomes(set(range(3)))}},
                 trained={"memit": ["PN"]})
    b = _run_dir(tmp_path, "b", {"rome": {"PP": _outcomes(set(range(30))), "PN": _outcomes(set(range(25)))}})
    out = tmp_path / "rep"
    result = invoke(["report", a, b, "--compare", "memit", "rome", "--out", out])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "compare.csv", keep_default_na=False).set_index("metric")
    assert csv.loc["PN", "trained_on"] == "A" and csv.loc["PP", "trained_on"] == ""
    md = (out / "compare.md").read_text()
    assert "| negation PN† |" in md and "| negation PP |" in md and "trained on the query form" in md
    result = invoke(["report", a, b, "--compare", "rome", "memit", "--out", out])
    assert pd.read_csv(out / "compare.csv", keep_default_na=False).set_index("metric").loc["PN", "trained_on"] == "B"
    # no row trained on anything compared: no mark, no note
    c = _run_dir(tmp_path, "c", {"memit": {"PN": _outcomes(set(range(3)))}})
    assert invoke(["report", b, c, "--compare", "rome", "memit", "--out", out]).exit_code == 0
    assert "†" not in (out / "compare.md").read_text()


def test_a_large_difference_stays_detectable_in_a_long_table(tmp_path):
    # 60 metrics × 100 records: one with a large shift of graded values (not 0/100 outcomes, so the
    # permutation test), the rest equal. With a fixed 2000 draws its p could not go below 2/2001 and
    # Holm (× 60) would call it undetectable; the draws grow with the table.
    from editprobe.report.paired import permutation_draws

    rng = np.random.default_rng(0)
    base = {f"r{i}": float(v) for i, v in enumerate(rng.uniform(10, 60, 100))}
    shifted = {rid: v + 30.0 + float(rng.uniform(-5, 5)) for rid, v in base.items()}
    same = {f"M{k}": base for k in range(59)}
    a = _run_dir(tmp_path, "a", {"memit": {"big": shifted, **same}})
    b = _run_dir(tmp_path, "b", {"rome": {"big": base, **same}})
    out = tmp_path / "rep"
    assert invoke(["report", a, b, "--compare", "memit", "rome", "--out", out]).exit_code == 0
    csv = pd.read_csv(out / "compare.csv", keep_default_na=False).set_index("metric")
    assert len(csv) == 60 and csv.loc["big", "test"] == PERMUTATION_TEST
    assert csv.loc["big", "p"] <= 2 / (permutation_draws(60) + 1) and csv.loc["big", "verdict"] == "A higher"
    assert permutation_draws(10) == 2000 and permutation_draws(60) == 6000


def test_compare_errors_are_one_line_naming_the_selector(tmp_path):
    a = _run_dir(tmp_path, "a", {"memit": {"PP": _outcomes({1})}})
    b = _run_dir(tmp_path, "b", {"memit": {"PP": _outcomes({2})}, "rome": {"PP": _outcomes({3})}})
    out = tmp_path / "rep"
    for selectors, expected in ((["memit", "rome"], "'memit' is ambiguous"),
                                (["alphaedit", "rome"], "'alphaedit' selects no row; the rows are: ")):
        result = invoke(["report", a, b, "--compare", *selectors, "--out", out])
        assert result.exit_code == 2 and len(result.error_lines) == 1, result.output
        assert expected in result.error_lines[0]
    assert f"{b}:rome" in result.error_lines[0]
    (b / "records.jsonl").unlink()
    result = invoke(["report", a, b, "--compare", f"{a}:memit", "rome", "--out", out])
    assert result.exit_code == 2 and "no records.jsonl" in result.error_lines[0]
    assert not (out / "negation.md").exists()  # checked before anything is written


# --- the power table ------------------------------------------------------------------------------
def test_the_power_table_in_the_docs_is_what_the_function_computes():
    text = DOCS.read_text()
    table = text.split("## How many edits do you need?")[1]
    row = re.search(r"^\| 100 \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|", table, re.M)
    assert row, "the p = 0.5 table has a row for n = 100"
    assert int(row.group(3)) == round(100 * mcnemar_power(100, 0.5, 0.10))
    assert int(row.group(2)) == round(100 * mcnemar_power(100, 0.5, 0.05))
    assert "2000 simulations" in table and "seed 0" in table


# --- real tiny runs: per-record values and the plumbing -----------------------------------------
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    import os

    from test_runs_helpers import config, workspace

    from editprobe.runs import run_experiment

    root = tmp_path_factory.mktemp("compare")
    old = os.environ.get("EDITPROBE_CACHE")
    os.environ["EDITPROBE_CACHE"] = str(root / "cache")
    try:
        ws = workspace(root)
        records = json.loads(ws["data"].read_text())
        subjects = [r["requested_rewrite"]["subject"] for r in records]
        for i, r in enumerate(records):  # paraphrases (one or two) and a neighbour for the classic probes
            rewrite = r["requested_rewrite"]
            prompt = rewrite["prompt"].format(rewrite["subject"])
            r["paraphrase_prompts"] = [f"So, {prompt}", f"{prompt} is"][: 1 + i % 2]
            r["neighborhood_prompts"] = [rewrite["prompt"].format(subjects[(i + 1) % len(subjects)])]
        data = root / "cf.json"
        data.write_text(json.dumps(records))
        a, b = root / "a", root / "b"
        run_experiment(config(ws, a, datasets=(str(data),),
                              probes=("negation", "factcheck", "efficacy", "paraphrase", "neighborhood")),
                       progress=False)
        run_experiment(config(ws, b, datasets=(str(data),), probes=("negation", "efficacy"),
                              overrides={"mom2_corpus": str(ws["corpus"]), "v_num_grad_steps": 1}), progress=False)
    finally:
        if old is None:
            os.environ.pop("EDITPROBE_CACHE", None)
        else:
            os.environ["EDITPROBE_CACHE"] = old
    yield a, b
    shutil.rmtree(root, ignore_errors=True)


# Avg's n counts the discrepancies it averages, not records.
NOT_RECORD_COUNTS = {("negation", "Avg")}


def test_records_of_a_run_average_to_its_metrics(tiny_runs):
    from editprobe.runs.records import read_record_values
    from editprobe.runs.store import read_summary
    from editprobe.runs.summary import parse_summary

    a, _ = tiny_runs
    summary = parse_summary(read_summary(a))
    rows = {("none", d): s.no_edit for d, s in summary.datasets.items()}
    rows.update({(r.method, r.dataset): r.probes for r in summary.results})
    seen = set()
    for line in read_record_values(a):
        metric = rows[(line.method, line.dataset)][line.probe].metrics[line.metric]
        values = list(line.values.values())
        seen.add((line.probe, line.metric))
        if not values:
            assert metric.value is None and not metric.n
            continue
        assert sum(values) / len(values) == pytest.approx(metric.value, abs=0.1), line
        if metric.n is not None and (line.probe, line.metric) not in NOT_RECORD_COUNTS:
            assert len(values) == metric.n, line
    for expected in (("factcheck", "Eff"), ("factcheck", "Acc"), ("factcheck", "Control"), ("factcheck", "Balanced"),
                     ("efficacy", "prob"), ("efficacy", "magnitude"), ("efficacy", "EM"), ("paraphrase", "EM"),
                     ("neighborhood", "magnitude"), ("negation", "PN|PP")):
        assert expected in seen, expected


def test_compare_two_real_runs(tiny_runs):
    a, b = tiny_runs
    out = a.parent / "rep"
    # Each run has its no-edit row: a bare "none" is ambiguous once b is in the report.
    result = invoke(["report", a, "--compare", f"{a}:memit", f"{b}:memit", "--compare", "memit", "none",
                     "--out", out])
    assert result.exit_code == 2 and "is ambiguous" in result.error_lines[0]
    result = invoke(["report", a, "--compare", f"{a}:memit", f"{b}:memit", "--compare", f"{a}:memit", f"{a}:none",
                     "--out", out])
    assert result.exit_code == 0, result.output
    csv = pd.read_csv(out / "compare.csv")
    first = csv[csv["B"] == f"{b}:memit"]
    # Only the metrics both rows hold: b ran negation and efficacy.
    assert set(first["probe"]) == {"negation", "efficacy"} and set(first["n"]) == {6}
    assert set(csv[csv["B"] == "none"]["probe"]) >= {"negation", "factcheck", "efficacy", "paraphrase"}
    assert set(csv["verdict"]) <= {"A higher", "B higher", "no detectable difference"}
    assert "### Paired comparisons" in result.stdout


def test_portability_and_multihop_keep_their_per_record_values():
    from editprobe.probes.builtin.portability import MultiHopProbe, PortabilityProbe

    state = {"groups": ["r1", "r1", "r2"], "questions": ["q1", "q2", "q3"], "answers": ["a", "b", "c"],
             "hits": [[True, False], [True, True, True, True], [False]]}
    outcome, _ = PortabilityProbe()._result(state, "positive")
    assert outcome.metrics["tokens"].records == {"r1": pytest.approx(75.0), "r2": 0.0}  # (50 + 100) / 2
    assert outcome.metrics["tokens_pooled"].records == {"r1": pytest.approx(500 / 6), "r2": 0.0}
    assert MultiHopProbe()._result(state, "positive")[0].metrics["tokens"].records["r1"] == pytest.approx(500 / 6)
