"""Saving an edited model and evaluating a checkpoint (docs/evaluate.md) on the trained tiny
model: a MEMIT run saves its positively edited model; ``editprobe evaluate`` on it, through
the command line and through ``editprobe.evaluate``, reproduces the run's PP/PN, fact-check
and classic numbers exactly; ``report`` reads both; and the refusals are one line each."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from cli_helpers import invoke
from test_runs_helpers import config

import editprobe
from editprobe.models import load_model
from editprobe.models.checkpoint import SIDECAR, fingerprint
from editprobe.runs import run_experiment

PROBES = ("negation", "factcheck", "efficacy", "two-choice")


@pytest.fixture(scope="module")
def saved(run_ws, tmp_path_factory):
    """A finished MEMIT run with ``save_model`` (positive stage only: the negated one is not saved)."""
    out = tmp_path_factory.mktemp("evaluate") / "memit-run"
    loaded = load_model(str(run_ws["model"]))
    weights = {k: v.clone() for k, v in loaded.model.state_dict().items()}
    summary = run_experiment(config(run_ws, out, probes=PROBES, save_model=True), loaded=loaded, progress=False)
    restored = all(torch.equal(loaded.model.state_dict()[k], v) for k, v in weights.items())
    return {"out": out, "summary": summary, "checkpoint": out / "models" / "cf__memit", "restored": restored,
            "ws": run_ws}


def _numbers(row: dict) -> dict:
    """PP/PN, the fact-check and the classic metrics of a result row (values and intervals)."""
    out = {}
    for probe in PROBES:
        for key, m in row["probes"][probe]["metrics"].items():
            if probe == "negation" and key not in ("PP", "PN", "PN|PP"):
                continue  # NN, NP and their discrepancies need the negated edit
            out[f"{probe} {key}"] = (m["value"], m.get("lo"), m.get("hi"), m.get("n"))
    return out


def test_the_run_saves_its_positive_model_with_what_made_it(saved):
    ckpt = saved["checkpoint"]
    assert saved["restored"], "saving must not leave the run's model edited"
    assert (ckpt / "model.safetensors").is_file() and (ckpt / "config.json").is_file()
    assert (ckpt / "tokenizer_config.json").is_file()
    sidecar = json.loads((ckpt / SIDECAR).read_text())
    assert sidecar["method"] == "memit" and sidecar["made_with"] == "run" and sidecar["stage"] == "positive"
    assert sidecar["records"] == [str(i) for i in range(6)] and sidecar["n"] == 6 and sidecar["seed"] == 0
    assert sidecar["dtype"] == "float32" and sidecar["hparams"]["layers"] and sidecar["editprobe_version"]
    assert sidecar["fingerprint"] == fingerprint(ckpt)
    assert not any(p.name.startswith(".") for p in ckpt.parent.iterdir()), "a temporary left beside it"
    # a plain transformers load, offline, gives the edited weights back
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(ckpt, local_files_only=True)
    original = load_model(str(saved["ws"]["model"])).model
    changed = [k for k, v in reloaded.state_dict().items() if not torch.equal(v, original.state_dict()[k])]
    assert changed and all(".mlp.down_proj." in k for k in changed)


def test_evaluate_on_the_command_line_reproduces_the_run(saved, tmp_path):
    out = tmp_path / "external"
    result = invoke(["evaluate", "--edited", saved["checkpoint"], "--out", out] +
                    [a for p in PROBES for a in ("--probe", p)])
    assert result.exit_code == 0, result.output
    evaluated = json.loads((out / "summary.json").read_text())
    (run_row,), (ext_row,) = saved["summary"]["results"], evaluated["results"]
    assert ext_row["method"] == "external" and ext_row["variant"] == "cf__memit"
    assert ext_row["hparams"]["fingerprint"] == fingerprint(saved["checkpoint"])
    assert _numbers(ext_row) == _numbers(run_row)
    assert evaluated["datasets"]["cf"]["no_edit"] == saved["summary"]["datasets"]["cf"]["no_edit"]
    neg = ext_row["probes"]["negation"]["metrics"]
    assert neg.get("NN") is None or neg["NN"]["value"] is None  # no negated edit in a checkpoint
    assert f"checkpoint fingerprint sha256 {fingerprint(saved['checkpoint'])}" in result.stdout

    report = invoke(["report", saved["out"], out, "--out", tmp_path / "report"])
    assert report.exit_code == 0, report.output
    assert "external+cf__memit" in report.stdout and "| memit |" in report.stdout
    assert fingerprint(saved["checkpoint"])[:16] in report.stdout


def test_the_python_api_reproduces_the_run_from_models_in_memory(saved, tmp_path):
    original = load_model(str(saved["ws"]["model"]))
    edited = load_model(str(saved["checkpoint"])).model
    before = {k: v.clone() for k, v in original.model.state_dict().items()}
    rows = editprobe.evaluate(edited, original.model, original.tokenizer, str(saved["ws"]["data"]), probes=PROBES,
                              negation_table=str(saved["ws"]["negations"]), out=tmp_path / "api")
    (row,) = rows
    assert row.method == "external" and row.variant == "in-memory"
    assert _numbers(row.model_dump(mode="json")) == _numbers(saved["summary"]["results"][0])
    assert all(torch.equal(original.model.state_dict()[k], v) for k, v in before.items()), "original restored"
    assert (tmp_path / "api" / "summary.json").is_file()


def test_ike_cannot_save_a_model(run_ws, tmp_path):
    result = invoke(["edit", "--model", run_ws["model"], "--method", "ike", "--hparams", "tiny", "--data",
                     run_ws["data"], "--n", "2", "--out", tmp_path / "e", "--save-model", tmp_path / "m"])
    assert result.exit_code != 0 and len(result.error_lines) == 1, result.output
    assert "--save-model: ike's edit is not in the model's weights" in result.stderr
    assert not (tmp_path / "e").exists() and not (tmp_path / "m").exists()
    run = invoke(["run", "--model", run_ws["model"], "--method", "ike", "--hparams", "tiny", "--data", run_ws["data"],
                  "--n", "2", "--negation-table", run_ws["negations"], "--out", tmp_path / "r", "--save-model"])
    assert run.exit_code != 0 and "save_model: ike's edit is not in the model's weights" in run.stderr
    assert not (tmp_path / "r").exists()


def test_a_checkpoint_of_another_architecture_is_one_line(saved, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(saved["checkpoint"], other)
    cfg = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": cfg["num_hidden_layers"] + 1}))
    result = invoke(["evaluate", "--edited", other, "--out", tmp_path / "out"])
    assert result.exit_code != 0 and len(result.error_lines) == 1, result.output
    assert "not an edit of the original model: config num_hidden_layers is" in result.stderr
    assert not (tmp_path / "out").exists()


def test_records_other_than_the_checkpoints_are_one_line(saved, tmp_path):
    result = invoke(["evaluate", "--edited", saved["checkpoint"], "--n", "4", "--out", tmp_path / "out"])
    assert result.exit_code != 0 and len(result.error_lines) == 1, result.output
    assert "not the records the checkpoint was edited with" in result.stderr


def test_a_missing_checkpoint_is_one_line(saved, tmp_path):
    result = invoke(["evaluate", "--edited", tmp_path / "nowhere", "--original", saved["ws"]["model"],
                     "--data", saved["ws"]["data"], "--out", tmp_path / "out"])
    assert result.exit_code != 0 and len(result.error_lines) == 1, result.output
    assert "--edited" in result.stderr and "no such directory" in result.stderr


def test_a_hub_id_in_the_local_cache_evaluates_offline_like_its_directory(saved, tmp_path, monkeypatch):
    """``--edited OWNER/NAME``: the checkpoint laid out as the Hugging Face cache holds a
    downloaded repository (refs/main → snapshots/<revision>/), the hub switched off: found,
    fingerprinted and evaluated to the directory's numbers, labelled by the repository."""
    import huggingface_hub

    revision = "0" * 40
    repo = tmp_path / "hub" / "models--someone--edited-tiny"
    shutil.copytree(saved["checkpoint"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "external"
    result = invoke(["evaluate", "--edited", "someone/edited-tiny", "--out", out] +
                    [a for p in PROBES for a in ("--probe", p)])
    assert result.exit_code == 0, result.output
    (row,) = json.loads((out / "summary.json").read_text())["results"]
    assert row["variant"] == "edited-tiny" and row["hparams"]["fingerprint"] == fingerprint(saved["checkpoint"])
    assert _numbers(row) == _numbers(saved["summary"]["results"][0])
    missing = invoke(["evaluate", "--edited", "someone/not-downloaded", "--out", tmp_path / "none"])
    assert missing.exit_code != 0 and len(missing.error_lines) == 1, missing.output
    assert "someone/not-downloaded" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
