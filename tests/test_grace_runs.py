"""GRACE in a run beside MEMIT (the run loop, its probes, its checkpoints): the weights stay
untouched, every probe asks the edited model, and a run killed hard inside GRACE's stage
resumes to the same numbers and samples as an uninterrupted one."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from test_runs_helpers import cli_run, comparable, config, subprocess_env, workspace

from editprobe.models import load_model
from editprobe.runs import read_samples, read_summary, run_experiment

METHODS = ("memit", "grace")
PROBES = ("negation", "efficacy")
# memit's two stages take checkpoints 1-4 (two batches each); the 5th is GRACE's first
# positive batch: the resume must continue GRACE's codebook from its checkpoint.
KILL_AFTER_5TH_CHECKPOINT = "editprobe.runs.store:RunDir.record_checkpoint:5:after"


def _cli(ws, out, env, *extra, kill=None):
    return cli_run(ws, out, env, METHODS, *extra, probes=PROBES, kill=kill)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("grace-runs")
    ws = workspace(root)
    env = subprocess_env(root)
    reference = root / "reference"
    loaded = load_model(str(ws["model"]))
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    with pytest.MonkeyPatch.context() as mp:  # the in-process run shares the subprocesses' stats cache
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        summary = run_experiment(config(ws, reference, methods=METHODS, probes=PROBES), loaded=loaded,
                                 progress=False)
    untouched = all(torch.equal(weights[k], v) for k, v in loaded.model.state_dict().items())
    hooks_left = any(m._forward_hooks for m in loaded.model.modules())
    killed = root / "killed"
    first = _cli(ws, killed, env, kill=KILL_AFTER_5TH_CHECKPOINT)
    ckpt = killed / "checkpoints" / "cf__grace__positive" / "state.json"
    state = {"rc": first.returncode, "stderr": first.stderr,
             "grace_batches": json.loads(ckpt.read_text())["batches"] if ckpt.exists() else None}
    resumed = _cli(ws, killed, env, "--resume")
    return {"reference": reference, "summary": summary, "untouched": untouched, "hooks_left": hooks_left,
            "killed": killed, "state": state, "resumed": resumed}


def test_grace_runs_beside_memit_and_leaves_the_weights_and_no_hook(runs):
    rows = {row["method"]: row for row in runs["summary"]["results"]}
    assert set(rows) == set(METHODS)
    grace = rows["grace"]
    assert set(grace["edit_reports"]) == {"positive", "negative"}
    assert set(grace["probes"]["negation"]["metrics"]) >= {"PP", "PN", "NN", "NP", "Avg"}
    # GRACE's own edit prompts get the new object (its values are trained to give it).
    assert grace["probes"]["negation"]["metrics"]["PP"]["value"] == 100.0
    assert runs["untouched"] and not runs["hooks_left"]


def test_a_run_killed_inside_grace_resumes_to_the_uninterrupted_run(runs):
    assert runs["state"]["rc"] == -signal.SIGKILL, runs["state"]["stderr"]
    assert runs["state"]["grace_batches"] == 1
    assert runs["resumed"].returncode == 0, runs["resumed"].stderr
    assert comparable(read_summary(runs["killed"])) == comparable(read_summary(runs["reference"]))
    assert read_samples(runs["killed"]) == read_samples(runs["reference"])


def test_the_edit_job_edits_with_grace(run_ws, tmp_path):
    from editprobe.jobs.edit import EditConfig, EditJob

    loaded = load_model(str(run_ws["model"]))
    job = EditJob(EditConfig.build(dict(model=str(run_ws["model"]), method="grace", data=str(run_ws["data"]), n=3,
                                        batch_size=3, out=tmp_path / "out", hparams="tiny")), loaded=loaded)
    job.preflight()
    report = job.run()
    assert report["method"] == "grace" and report["n"] == 3
    assert report["efficacy_before"] == 0.0 and report["efficacy_after"] == 100.0
    assert [r["placement"] for r in report["batches"][0]["requests"]] == ["added"] * 3
