"""`editprobe edit` end to end on a tiny local model: state, deltas and report written."""

import json
import re

import torch
from cli_helpers import invoke
from tiny_trained import save_workspace

from editprobe.models.tiny import tiny_facts


def _counterfact_file(path, n=6):
    facts = tiny_facts()
    objects = sorted({o for t, _, o in facts if t == facts[0][0]})
    records = []
    for i, (template, subject, obj) in enumerate([f for f in facts if f[0] == facts[0][0]][:n]):
        new = next(o for o in objects if o != obj)
        records.append({
            "case_id": i,
            "requested_rewrite": {"prompt": template, "subject": subject, "relation_id": "P103",
                                   "target_new": {"str": new}, "target_true": {"str": obj}},
            "paraphrase_prompts": [], "neighborhood_prompts": [],
        })
    path.write_text(json.dumps(records))


def test_edit_command_writes_state_and_report(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    saved = save_workspace(tmp_path, steps=60)
    model_dir, corpus = saved["model"], saved["corpus"]
    data = tmp_path / "cf.json"
    _counterfact_file(data)
    out = tmp_path / "out"
    result = invoke([
        "edit", "--model", str(model_dir), "--method", "memit", "--data", str(data), "--n", "6",
        "--batch-size", "3", "--out", str(out), "--hparams", "tiny", "--set", f"mom2_corpus={corpus}",
    ])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == 6 and len(report["batches"]) == 2
    assert report["efficacy_after"] > report["efficacy_before"]
    assert (out / "state" / "deltas.safetensors").is_file()
    assert "PP efficacy (%, " in result.output
    # the one display convention (docs/statistics.md): value [lo, hi]
    assert re.search(r"before \d+\.\d \[\d+\.\d, \d+\.\d\]  after \d+\.\d \[\d+\.\d, \d+\.\d\]\n", result.output)


def test_edit_command_bad_method_is_one_clear_error(tmp_path):
    result = invoke(["edit", "--method", "nope", "--out", str(tmp_path / "o"), "--n", "1"])
    assert result.exit_code == 2
    assert "unknown method 'nope'" in result.output
