"""A run killed hard mid-way (SIGKILL right after a checkpoint, in a subprocess running the
CLI), then resumed, equals an uninterrupted run: summary metrics and per-sample records."""

from __future__ import annotations

import json
import signal

import pytest
from test_runs_helpers import cli_run, comparable, config, subprocess_env, workspace

from editprobe.runs import read_samples, read_summary, run_experiment

METHODS = ("memit", "alphaedit")
# The 7th checkpoint's progress entry is written, then the process is killed.
KILL_AFTER_7TH_CHECKPOINT = "editprobe.runs.store:RunDir.record_checkpoint:7:after"


def _cli(ws, out, env, *extra, kill=None):
    return cli_run(ws, out, env, METHODS, *extra, kill=kill)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    ws = workspace(root)
    env = subprocess_env(root)
    reference = root / "reference"
    with pytest.MonkeyPatch.context() as mp:  # the in-process run shares the subprocesses' stats cache
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        run_experiment(config(ws, reference, methods=METHODS), progress=False)

    killed = root / "killed"
    # 7 checkpoints: memit's two stages and AlphaEdit's positive one (two batches each),
    # then AlphaEdit's first negative batch: the resume must skip three finished stages and
    # continue the fourth mid-way (AlphaEdit: its projectors must be rebuilt, too).
    first = _cli(ws, killed, env, kill=KILL_AFTER_7TH_CHECKPOINT)
    state = {
        "rc": first.returncode, "stderr": first.stderr,
        "summary_after_kill": (killed / "summary.json").exists(),
        "positive_stage": (killed / "stages" / "cf__alphaedit__positive.json").exists(),
        "negative_ckpt": json.loads((killed / "checkpoints" / "cf__alphaedit__negative" / "state.json").read_text())["batches"]
        if (killed / "checkpoints" / "cf__alphaedit__negative" / "state.json").exists() else None,
    }
    state["timings_at_kill"] = json.loads((killed / "progress.json").read_text())["timings"]
    refused = _cli(ws, killed, env)  # without --resume: refused, nothing touched
    resumed = _cli(ws, killed, env, "--resume")
    return {"ws": ws, "env": env, "reference": reference, "killed": killed, "state": state, "refused": refused,
            "resumed": resumed}


def test_kill_left_an_unfinished_run_with_checkpoints(runs):
    s = runs["state"]
    assert s["rc"] == -signal.SIGKILL, s["stderr"]
    assert not s["summary_after_kill"]
    assert s["positive_stage"] and s["negative_ckpt"] == 1


def test_unfinished_run_is_not_restarted_without_resume(runs):
    assert runs["refused"].returncode == 2
    assert "--resume" in runs["refused"].stderr


def test_resumed_run_equals_uninterrupted_run(runs):
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr
    ref, got = read_summary(runs["reference"]), read_summary(runs["killed"])
    assert comparable(got) == comparable(ref)
    # The intervals are drawn from the stored per-record values: the same after a resume.
    intervals = [(m["lo"], m["hi"]) for r in got["results"] for m in r["probes"]["negation"]["metrics"].values()]
    assert intervals and all(lo is not None for lo, _ in intervals)
    assert intervals == [(m["lo"], m["hi"]) for r in ref["results"] for m in r["probes"]["negation"]["metrics"].values()]
    assert read_samples(runs["killed"]) == read_samples(runs["reference"])
    # The resume continued where the kill left off: the batches done before it were not
    # redone (their timings are the ones recorded before the kill).
    at_kill = runs["state"]["timings_at_kill"]
    assert set(at_kill["cf__alphaedit__negative"]) == {"0"}
    assert got["timings"]["batches"]["cf__alphaedit__negative"]["0"] == at_kill["cf__alphaedit__negative"]["0"]
    for stage in ("cf__memit__positive", "cf__memit__negative", "cf__alphaedit__positive"):
        assert got["timings"]["batches"][stage] == at_kill[stage]
    assert set(got["timings"]["batches"]["cf__alphaedit__negative"]) == {"0", "1"}


def test_finished_run_is_never_rewritten(runs):
    before = (runs["killed"] / "summary.json").read_bytes()
    again = _cli(runs["ws"], runs["killed"], runs["env"], "--resume")
    assert again.returncode == 2
    assert "finished run" in again.stderr
    assert (runs["killed"] / "summary.json").read_bytes() == before
