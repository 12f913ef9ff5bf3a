"""kill -9 at several points of ``edit`` and ``run`` (a subprocess that SIGKILLs itself at a
chosen call: see kill_driver.py), then the next command: it must work, and nothing the kill
left behind may be taken for a result."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from cli_helpers import invoke
from failure_harness import edit_args, run_args
from kill_driver import command
from test_runs_helpers import subprocess_env, workspace


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    root = tmp_path_factory.mktemp("kills")
    paths = workspace(root)
    env = subprocess_env(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        yield {**paths, "env": env}


def _edit(ws, out, *extra):
    return edit_args(ws, out, *extra, n=4)


def _run(ws, out, *extra):
    return run_args(ws, out, *extra, n=4)


def _killed(ws, at: str, args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command(at, args), env=ws["env"], capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    return done


def _leftovers(root) -> list[str]:
    """Temporary files of interrupted atomic writes (dot-named siblings)."""
    return [str(p) for p in root.rglob(".*") if p.is_dir()] if root.exists() else []


def test_run_killed_right_after_opening_its_directory(ws, tmp_path):
    out = tmp_path / "run"
    _killed(ws, "editprobe.runs.store:RunDir.open:1:after", _run(ws, out))
    assert (out / "config.json").is_file() and not (out / "stages").exists()
    # Nothing was done, so a plain rerun (no --resume) starts the run; --resume would too.
    result = invoke(_run(ws, out))
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


def test_run_killed_between_a_checkpoint_and_its_progress_entry(ws, tmp_path):
    out = tmp_path / "run"
    # Writes: config.json, the baseline's result, then the first checkpoint's state and its
    # progress entry: the process dies just before that entry, so the checkpoint leads it.
    _killed(ws, "editprobe.runs.store:write_json_atomic:3:before", _run(ws, out))
    stages = sorted(p.name for p in (out / "stages").glob("*.json"))
    assert stages and "summary.json" not in os.listdir(out)
    plain = invoke(_run(ws, out))
    assert plain.exit_code == 2 and "--resume" in plain.stderr  # work is there: never restarted silently
    resumed = invoke(["run", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["results"][0]["probes"]["negation"]["metrics"]["PP"]["value"] is not None


def test_run_killed_mid_rename_of_a_checkpoint(ws, tmp_path):
    out = tmp_path / "run"
    # os.replace is the last step of every atomic write: die just before the 4th one.
    _killed(ws, "os:replace:4:before", _run(ws, out))
    assert _leftovers(out), "the kill should have interrupted an atomic write"
    resume = (out / "stages").is_dir() or (out / "checkpoints").is_dir()
    result = invoke(["run", "--out", str(out), "--resume"] if resume else _run(ws, out))
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


def test_edit_killed_between_batches_leaves_no_result(ws, tmp_path):
    out = tmp_path / "edit"
    _killed(ws, "editprobe.editing.lte.engine:LTEEditor.apply:2:before", _edit(ws, out))
    assert not out.exists() or not any(p for p in out.iterdir() if not p.name.startswith("."))
    result = invoke(_edit(ws, out))
    assert result.exit_code == 0, result.output
    assert (out / "report.json").is_file() and (out / "state" / "deltas.safetensors").is_file()


def test_edit_killed_while_writing_the_covariance_cache(ws, tmp_path):
    out = tmp_path / "edit"
    args = _edit(ws, out, "--set", "mom2_n_samples=120")  # statistics no other test has cached
    _killed(ws, "editprobe.editing.lte.stats_store:save_file:1:after", args)
    assert not (out / "report.json").exists()  # the directory, marked first, holds no result
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "report.json").read_text())["efficacy_after"] > 0
