"""`editprobe demo` on a trained tiny model (its settings from --config): prints the
negation table with the no-edit row and the fact-check table, says where the files are,
re-reports a finished run without recomputing, and starts over with --fresh."""

from __future__ import annotations

import yaml
from test_runs_helpers import config, workspace
from cli_helpers import invoke

from editprobe.cli.demo import demo_config_fields


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines at the terminal width


def test_shipped_demo_settings_are_the_issue_s():
    fields = demo_config_fields()
    assert fields["model"] == "smollm2-135m" and fields["methods"] == ["memit", "alphaedit"]
    assert fields["n"] >= 40 and fields["batch_size"] == 20


def test_demo_prints_tables_and_reuses_a_finished_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    ws = workspace(tmp_path)
    fields = config(ws, tmp_path / "unused").model_dump(mode="json", exclude={"out"})
    cfg_path = tmp_path / "demo.yaml"
    cfg_path.write_text(yaml.safe_dump(fields))
    out = tmp_path / "demo"
    first = invoke(["demo", "--config", str(cfg_path), "--out", str(out), "--threads", "1"])
    assert first.exit_code == 0, first.output
    assert "No edit" in first.output and "Fact-checking" in first.output and "PN" in first.output
    assert (out / "summary.json").is_file() and (out / "report" / "negation.md").is_file()
    assert "samples.jsonl" in first.output
    stamp = (out / "summary.json").stat().st_mtime_ns

    again = invoke(["demo", "--config", str(cfg_path), "--out", str(out)])
    assert again.exit_code == 0, again.output
    assert "already holds this finished demo run" in _flat(again.output)
    assert (out / "summary.json").stat().st_mtime_ns == stamp  # not recomputed

    other = invoke(["demo", "--config", str(cfg_path), "--out", str(out), "--n", "3"])
    assert other.exit_code != 0 and "other settings" in _flat(other.output)

    fresh = invoke(["demo", "--config", str(cfg_path), "--out", str(out), "--n", "3", "--fresh"])
    assert fresh.exit_code == 0, fresh.output
    assert yaml.safe_load((out / "config.json").read_text())["n"] == 3


def test_fresh_refuses_to_delete_a_directory_that_is_not_a_run(tmp_path):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    result = invoke(["demo", "--out", str(out), "--fresh"])
    assert result.exit_code != 0 and "not a run directory" in _flat(result.output)
    assert (out / "notes.txt").is_file()
