"""`editprobe train rledit` on the tiny model: records disjoint from the evaluation data, the
trained hypernetwork written at the end, and a training run SIGKILLed after a checkpoint
that resumes to the hypernetwork of an uninterrupted one."""

from __future__ import annotations

import json
from pathlib import Path
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


def _args(ws, train, out, *sets: str):
    return ["train", "rledit", "--model", str(ws["model"]), "--data", str(train), "--exclude", str(ws["data"]),
            "--settings", "tiny", "--set", "n_steps=4", "--set", "batch_size=4",
            *[a for kv in sets for a in ("--set", kv)], "--out", str(out), "--threads", "1"]


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


@pytest.mark.parametrize("grad_handling", ["reference", "summed"])
def test_a_killed_training_resumes_to_the_uninterrupted_hypernetwork(ws, tmp_path, grad_handling):
    # killed after step 2 of 4 with an optimizer step every 3: the checkpoint holds two batches'
    # gradient, clipped after each (reference, the bound binds) or summed
    sets = (f"grad_handling={grad_handling}", "update_every=3", "max_grad_norm=0.001")
    train = _training_file(tmp_path / "train.json")
    assert invoke(_args(ws, train, tmp_path / "whole", *sets)).exit_code == 0
    spec = "editprobe.editing.rledit.loop:TrainingRun.save:2:after"
    killed = subprocess.run(command(spec, _args(ws, train, tmp_path / "cut", *sets)), env=subprocess_env(ws["root"]),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    progress = json.loads((tmp_path / "cut" / "checkpoint" / "progress.json").read_text())
    assert progress["step"] == 2 and not (tmp_path / "cut" / "hypernet").exists()
    assert progress["settings"]["grad_handling"] == grad_handling
    resumed = invoke([*_args(ws, train, tmp_path / "cut", *sets), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    # the plain progress starts at the checkpoint's batch (its ETA counts only this process's batches)
    lines = [line for line in resumed.stderr.splitlines() if line.startswith("[train rledit]")]
    assert lines[0].startswith("[train rledit] training batch 2/4 0s elapsed"), lines
    whole = load_file(tmp_path / "whole" / "hypernet" / "hypernet.safetensors")
    cut = load_file(tmp_path / "cut" / "hypernet" / "hypernet.safetensors")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)


def test_rledit_in_a_run_beside_memit_reports_pp_and_pn_only(ws, tmp_path):
    train = _training_file(tmp_path / "train.json")
    assert invoke(_args(ws, train, tmp_path / "t")).exit_code == 0
    out = tmp_path / "run"
    result = invoke(["run", "--model", str(ws["model"]), "--hparams", "tiny", "--method", "memit", "--method",
                     "rledit", "--data", str(ws["data"]), "--n", "6", "--batch-size", "3", "--negation-table",
                     str(ws["negations"]), "--probe", "negation", "--probe", "factcheck",
                     "--set", f"hypernet={tmp_path / 't' / 'hypernet'}", "--set", f"mom2_corpus={ws['corpus']}",
                     "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["method"]: r for r in summary["results"]}
    neg = rows["rledit"]["probes"]["negation"]["metrics"]
    assert neg["PP"]["value"] is not None and neg["PN"]["value"] is not None
    assert "NN" not in neg and "NP" not in neg and "NN" in rows["memit"]["probes"]["negation"]["metrics"]
    assert rows["rledit"]["preserve_previous"] is None and list(rows["rledit"]["edit_reports"]) == ["positive"]
    assert not list((out / "stages").glob("*rledit__negative*"))
    report = invoke(["report", str(out), "--out", str(tmp_path / "tables")])
    line = next(l for l in report.stdout.splitlines() if "| rledit |" in l)
    assert line.split("|")[6].strip() == "–" and line.split("|")[7].strip() == "–"  # NN, NP


def test_rledit_without_a_hypernetwork_says_how_to_train_one(ws, tmp_path):
    result = invoke(["edit", "--model", str(ws["model"]), "--hparams", "tiny", "--method", "rledit", "--data",
                     str(ws["data"]), "--n", "3", "--batch-size", "3", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: rledit needs a trained hypernetwork")
    assert "`editprobe train rledit --model" in result.stderr and result.error_lines == [result.stderr.strip()]
    assert not (tmp_path / "e").exists()


def test_the_shipped_training_records_are_disjoint_from_the_evaluation_samples():
    from editprobe.data import load_records
    from editprobe.jobs.train_rledit import DEFAULT_EXCLUDE, disjoint_records

    train = load_records("counterfact-train").records
    excluded = [r for spec in DEFAULT_EXCLUDE for r in load_records(spec).records]
    kept, dropped = disjoint_records(train, excluded)
    assert len(train) == 2000 and dropped == 0 and len(kept) == 2000
    assert all(r.paraphrase_prompts and r.neighborhood for r in train)  # equivalents and unrelated prompts


def test_a_trained_default_network_is_cached_and_used_when_hypernet_is_unset(ws, tmp_path, monkeypatch):
    from editprobe.editing.settings import model_keys as keys_model

    monkeypatch.setitem(keys_model.KNOWN_MODELS, str(ws["model"]), "tiny")  # its shipped settings: tiny.yaml
    edit = ["edit", "--model", str(ws["model"]), "--hparams", "tiny", "--method", "rledit", "--data", str(ws["data"]),
            "--n", "3", "--batch-size", "3", "--threads", "1"]
    missing = invoke([*edit, "--out", str(tmp_path / "e0")])
    assert missing.exit_code == 2 and "none is cached for" in missing.stderr
    trained = invoke(["train", "rledit", "--model", str(ws["model"]), "--out", str(tmp_path / "t"), "--threads", "1"])
    assert trained.exit_code == 0, trained.output  # default data (counterfact-train) and settings
    cached = json.loads((tmp_path / "t" / "training.json").read_text())["cached"]
    assert (tmp_path / "t" / "hypernet" / "hypernet.safetensors").read_bytes() == \
        (Path(cached) / "hypernet.safetensors").read_bytes()
    used = invoke([*edit, "--out", str(tmp_path / "e1")])
    assert used.exit_code == 0, used.output


@pytest.mark.parametrize("then", ["plain", "resume"])
def test_a_training_killed_before_its_first_checkpoint_is_no_dead_end(ws, tmp_path, then):
    train = _training_file(tmp_path / "train.json")
    spec = "editprobe.editing.rledit.loop:TrainingRun.save:1:before"
    killed = subprocess.run(command(spec, _args(ws, train, tmp_path / "cut")), env=subprocess_env(ws["root"]),
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / "cut" / "config.json").is_file() and not (tmp_path / "cut" / "checkpoint").exists()
    again = invoke([*_args(ws, train, tmp_path / "cut"), *(["--resume"] if then == "resume" else [])])
    assert again.exit_code == 0, again.output
    assert (tmp_path / "cut" / "hypernet" / "hypernet.safetensors").is_file()
    if then == "resume":
        assert "no checkpoint yet" in again.stderr and "starts from the beginning" in again.stderr


def test_a_training_killed_inside_a_checkpoint_swap_resumes_from_the_complete_checkpoint(ws, tmp_path):
    train = _training_file(tmp_path / "train.json")
    assert invoke(_args(ws, train, tmp_path / "whole")).exit_code == 0
    # The first checkpoint is created; the second replaces it by rename-aside: die between
    # the two renames, the old checkpoint set aside and the new one complete in its temporary.
    killed = subprocess.run(command("editprobe.paths:_set_aside:1:after", _args(ws, train, tmp_path / "cut")),
                            env=subprocess_env(ws["root"]), capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not (tmp_path / "cut" / "checkpoint").exists() and (tmp_path / "cut" / ".checkpoint.old").is_dir()
    plain = invoke(_args(ws, train, tmp_path / "cut"))
    assert plain.exit_code == 2 and "holds a training checkpoint; pass --resume" in plain.stderr
    resumed = invoke([*_args(ws, train, tmp_path / "cut"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    whole = load_file(tmp_path / "whole" / "hypernet" / "hypernet.safetensors")
    cut = load_file(tmp_path / "cut" / "hypernet" / "hypernet.safetensors")
    assert all(torch.equal(whole[k], cut[k]) for k in whole)
    assert not any(p.name.startswith(".checkpoint") for p in (tmp_path / "cut").iterdir())
