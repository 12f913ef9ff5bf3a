"""`editprobe train rledit` on the tiny model: records disjoint from the evaluation data, the
trained hypernetwork written at the end, and a training run SIGKILLed after a checkpoint
that resumes to the hypernetwork of an uninterrupted one."""

from __future__ import annotations

import json
import signal
import subprocess

import pytest
import torch
from cli_helpers import invoke
from kill_driver import command
from safetensors.torch import load_file
from test_runs_helpers import subprocess_env

from editprobe.models.tiny import tiny_facts


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


def _training_file(path):
    by_template: dict[str, list[str]] = {}
    for t, _, o in tiny_facts(0):
        by_template.setdefault(t, []).append(o)
    records = []
    for i, (t, s, o) in enumerate(tiny_facts(0)[:40]):
        new = next(x for x in sorted(set(by_template[t])) if x != o)
        records.append({"case_id": i, "requested_rewrite": {"prompt": t, "subject": s, "relation_id": None,
                                                            "target_new": {"str": new}, "target_true": {"str": o}},
                        "paraphrase_prompts": [], "neighborhood_prompts": []})
    path.write_text(json.dumps(records))
    return path


def _args(ws, train, out):
    return ["train", "rledit", "--model", str(ws["model"]), "--data", str(train), "--exclude", str(ws["data"]),
            "--settings", "tiny", "--set", "n_steps=4", "--set", "batch_size=4", "--out", str(out), "--threads", "1"]


def test_training_writes_a_hypernetwork_from_records_disjoint_from_the_evaluation_data(ws, tmp_path):
    train = _training_file(tmp_path / "train.json")
    result = invoke(_args(ws, train, tmp_path / "t"))
    assert result.exit_code == 0, result.output
    info = json.loads((tmp_path / "t" / "training.json").read_text())
    evaluation = {r["requested_rewrite"]["subject"] for r in json.loads(ws["data"].read_text())}
    trained_on = {r["requested_rewrite"]["subject"] for r in json.loads(train.read_text())} - evaluation
    assert info["records_dropped"] == 40 - len([r for r in json.loads(train.read_text())
                                                if r["requested_rewrite"]["subject"] in trained_on]) > 0
    assert info["records_used"] == 16
    assert len(info["history"]) == 4 and info["modules"][0] == "model.layers.2.mlp.gate_proj"
    assert f"({info['records_dropped']} dropped: they share a subject or prompt" in result.stdout
    assert (tmp_path / "t" / "hypernet" / "hypernet.safetensors").is_file()
    again = invoke(_args(ws, train, tmp_path / "t"))
    assert again.exit_code == 2 and "holds a trained hypernetwork" in again.stderr


def test_too_few_disjoint_records_is_one_line_before_any_work(ws, tmp_path):
    result = invoke(["train", "rledit", "--model", str(ws["model"]), "--data", str(ws["data"]), "--exclude",
                     str(ws["data"]), "--settings", "tiny", "--out", str(tmp_path / "t")])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --data: 0 training records after dropping 6 that share a subject")
    assert not (tmp_path / "t").exists()


def test_a_killed_training_resumes_to_the_uninterrupted_hypernetwork(ws, tmp_path):
    train = _training_file(tmp_path / "train.json")
    assert invoke(_args(ws, train, tmp_path / "whole")).exit_code == 0
    spec = "editprobe.editing.rledit.training:TrainingRun.save:2:after"
    killed = subprocess.run(command(spec, _args(ws, train, tmp_path / "cut")), env=subprocess_env(ws["root"]),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress = json.loads((tmp_path / "cut" / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 2 and not (tmp_path / "cut" / "hypernet").exists()
    resumed = invoke([*_args(ws, train, tmp_path / "cut"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    whole = load_file(tmp_path / "whole" / "hypernet" / "hypernet.safetensors")
    cut = load_file(tmp_path / "cut" / "hypernet" / "hypernet.safetensors")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
