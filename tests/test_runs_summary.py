"""The typed, versioned run summary: schema 0 (before probes were plug-ins) is read as it
was, a newer schema is refused with one line, and a run directory of the old layout is not
resumed."""

from __future__ import annotations

import json

import pytest
from cli_helpers import invoke

from editprobe.report import factcheck_table, load_summaries, negation_table
from editprobe.runs import RunConfig, RunDir
from editprobe.runs.store import RunDirError
from editprobe.runs.summary import SummaryError, parse_summary

V0 = {
    "config": {"model": "m", "methods": ["memit"], "datasets": ["cf"], "out": "x"},
    "seed": 0, "versions": {"editprobe": "0.1.0"},
    "datasets": {"cf": {"n_records": 4, "n_excluded": 0, "negation_rules": {"user-table": 4},
                        "no_edit": {"available": True, "note": "", "PP": 100.0, "PN": 25.0, "n_known": 4},
                        "factcheck_no_edit": {"Acc": 50.0, "n": 4}}},
    "results": [{"dataset": "cf", "method": "memit", "preserve_previous": True,
                 "negation": {"PP": 100.0, "PN": 75.0, "NN": 100.0, "NP": 50.0, "PP-PN": 25.0, "PP-NP": 50.0,
                              "NN-PN": 25.0, "NN-NP": 50.0, "Avg": 37.5},
                 "counts": {"PP": [4, 4]},
                 "factcheck": {"Eff": 100.0, "Acc": 33.3, "n": 3, "Control": 0.0, "Balanced": 66.7}}],
    "timings": {},
}


def test_schema_0_is_read_as_it_was(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps(V0))
    [summary] = load_summaries([tmp_path / "run"])
    assert summary.schema_version == 0
    neg = negation_table([summary])
    assert neg.loc[0, "PP"] == 100.0 and neg.loc[0, "PN"] == 25.0
    assert neg.loc[1, "Avg"] == 37.5 and neg.loc[1, "PP−PN"] == 25.0
    fc = factcheck_table([summary])
    assert fc.loc[0, "Acc"] == 50.0 and fc.loc[1, "Acc"] == 33.3 and fc.loc[1, "n"] == 3
    result = invoke(["report", str(tmp_path / "run"), "--out", str(tmp_path / "tables")])
    assert result.exit_code == 0, result.output
    assert "| memit | 100.0 [–] | 75.0 [–] |" in result.stdout  # schema 0 has no intervals


def test_a_newer_schema_is_refused_with_one_line(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**V0, "schema_version": 99}))
    with pytest.raises(SummaryError, match="summary schema 99 is newer"):
        parse_summary({**V0, "schema_version": 99})
    result = invoke(["report", str(tmp_path / "run"), "--out", str(tmp_path / "tables")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "schema 99" in result.stderr
    assert not (tmp_path / "tables").exists()


def test_an_unfinished_run_of_the_old_layout_is_refused(tmp_path):
    config = RunConfig(out=tmp_path / "run")
    old = {k: v for k, v in config.identity().items() if k not in ("run_layout", "probes")}
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(old))
    with pytest.raises(RunDirError, match="layout 0 .* cannot be resumed here"):
        RunDir(tmp_path / "run").check(config, resume=True)
    result = invoke(["run", "--out", str(tmp_path / "run"), "--resume"])
    assert result.exit_code == 2 and "cannot be resumed here" in result.stderr
