"""One spelling per thing across the command line, run configs and study files (issue #29's CLI
part), the old spellings still read: ``set:`` / ``overrides:``, ``--method`` once where a command
writes one result, ``train rledit --hparams`` / ``--settings``, and ``methods list`` /
``probes list``. Everything here fails or finishes before a model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cli_helpers import invoke

from editprobe.runs import RunConfig, RunConfigError
from editprobe.runs.config import read_config_file
from editprobe.studies.study import StudyError, expand, load_study


# --- set: and its alias overrides: ----------------------------------------------------------------
@pytest.mark.parametrize("key", ["set", "overrides"])
def test_a_run_config_takes_set_and_its_old_name(tmp_path, key):
    path = tmp_path / "run.yaml"
    path.write_text(f"methods: [memit]\n{key}: {{v_lr: 0.1}}\n")
    config = RunConfig.from_sources(path, {}, {"clamp_norm_factor": 2})
    assert config.overrides == {"v_lr": 0.1, "clamp_norm_factor": 2}
    assert "overrides" in config.identity()  # the saved field's name: old runs still resume


def test_both_spellings_in_a_run_config_is_one_error_naming_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("set: {v_lr: 0.1}\noverrides: {v_lr: 0.2}\n")
    with pytest.raises(RunConfigError, match=rf"^{re.escape(str(path))}: both 'set' and 'overrides' given"):
        read_config_file(path)
    result = invoke(["run", "--config", path, "--out", tmp_path / "out"])
    assert result.exit_code == 2 and len(result.error_lines) == 1, result.output
    assert str(path) in result.error_lines[0] and "'overrides' is the old name of 'set'" in result.error_lines[0]
    assert not (tmp_path / "out").exists()


def test_run_config_build_takes_set():
    assert RunConfig.build({"set": {"v_lr": 0.3}}).overrides == {"v_lr": 0.3}


def _study(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(text)
    return path


def test_a_study_takes_set_and_overrides_in_defaults_and_entries(tmp_path):
    path = _study(tmp_path, "defaults: {n: 4, set: {v_lr: 0.1}}\nruns:\n  - methods: [memit]\n    set: {clamp_norm_factor: 2}\n"
                            "  - methods: [alphaedit]\n    overrides: {L2: 3}\n")
    runs = expand(load_study(path), tmp_path / "out")
    assert [r.config.overrides for r in runs] == [{"v_lr": 0.1, "clamp_norm_factor": 2}, {"v_lr": 0.1, "L2": 3}]
    old = _study(tmp_path, "defaults: {overrides: {v_lr: 0.2}}\nruns:\n  - methods: [memit]\n")
    assert expand(load_study(old), tmp_path / "out2")[0].config.overrides == {"v_lr": 0.2}


@pytest.mark.parametrize("text, where", [
    ("runs:\n  - methods: [memit]\n  - methods: [rome]\n    set: {v_lr: 1}\n    overrides: {v_lr: 2}\n", "runs[1]"),
    ("defaults: {set: {v_lr: 1}, overrides: {v_lr: 2}}\nruns:\n  - methods: [memit]\n", "defaults"),
])
def test_both_spellings_in_a_study_name_the_file_and_the_place(tmp_path, text, where):
    path = _study(tmp_path, text)
    with pytest.raises(StudyError, match=rf"^{re.escape(str(path))}: {re.escape(where)}: both 'set' and 'overrides' given"):
        load_study(path)


# --- --method: once where a command writes one result -------------------------------------------
@pytest.mark.parametrize("command, extra, hint", [
    ("edit", ["--out", "x"], "use `editprobe run --method A --method B` for several"),
    ("tune", ["--out", "x.yaml", "--data", "counterfact-sample"], "run tune once per method"),
    ("analyze", ["--out", "x"], "run analyze once per method"),
])
def test_a_second_method_is_refused_in_one_line(tmp_path, command, extra, hint):
    result = invoke([command, "--method", "memit", "--method", "rome", *[str(tmp_path / e) if e in ("x", "x.yaml")
                                                                         else e for e in extra]])
    assert result.exit_code == 2, result.output
    assert len(result.error_lines) == 1, result.output
    assert result.error_lines[0].startswith(f"error: {command} takes one --method, got 2 (memit, rome); ")
    assert hint in result.error_lines[0]
    assert list(tmp_path.iterdir()) == []


def test_run_and_demo_take_several_methods():
    from editprobe.cli import app
    import typer

    root = typer.main.get_command(app)
    for name in ("run", "demo"):
        option = next(p for p in root.commands[name].params if "--method" in p.opts)
        assert option.multiple, name


# --- train rledit: --hparams, --settings its hidden old name -------------------------------------
def test_train_rledit_hparams_and_its_hidden_alias(tmp_path):
    help_text = invoke(["train", "rledit", "--help"]).stdout
    assert "--hparams" in help_text and "--settings " not in help_text and "--setting " in help_text
    both = invoke(["train", "rledit", "--hparams", "tiny", "--settings", "tiny", "--out", tmp_path / "t"])
    assert both.exit_code == 2 and "--settings is the old name of --hparams" in both.error_lines[0], both.output
    # The old spelling still reaches the settings: an unknown key is named either way.
    for flag in ("--hparams", "--settings"):
        result = invoke(["train", "rledit", flag, "no-such-key", "--out", tmp_path / "t"])
        assert result.exit_code == 2 and "no RLEdit settings for 'no-such-key'" in result.output, result.output


# --- methods list, probes list -------------------------------------------------------------------
def test_methods_list_has_every_registered_method():
    from editprobe.editing import METHODS

    result = invoke(["methods", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "kind", "in", "weights", "shipped", "settings", "(model", "keys)"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == set(METHODS)
    assert rows["memit"][1:3] == ["LTE", "yes"] and "smollm2-135m," in rows["memit"]
    assert rows["ike"][1:3] == ["other", "no"] and rows["grace"][1:3] == ["other", "no"]
    assert rows["ft"][1:3] == ["other", "yes"] and rows["external"][3] == "-"
    data = json.loads(invoke(["methods", "list", "--json"]).stdout)
    assert {d["name"] for d in data} == set(METHODS)
    assert next(d for d in data if d["name"] == "wise") == {
        "name": "wise", "kind": "other", "edit_in_weights": False, "settings": ["llama3-8b-instruct", "smollm2-135m",
                                                                               "tiny"]}


def test_probes_list_has_every_registered_probe_with_its_own_description():
    from editprobe.probes import PROBES

    result = invoke(["probes", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["name", "runs", "what", "it", "measures"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == set(PROBES)
    for name, probe in PROBES.items():
        assert rows[name].split()[1] == ("default" if probe.default else "opt-in")
        assert rows[name].endswith(probe.description)
    data = json.loads(invoke(["probes", "list", "--json"]).stdout)
    assert [d["name"] for d in data] == list(PROBES)
