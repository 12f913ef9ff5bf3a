"""Real model, small N: the whole experiment (no-edit baseline, positive and negated MEMIT
runs, fact-checking in the chat template) on the built-in SmolLM2 with built-in CounterFact
records, then the report tables. Numbers are checked for sense, not for the paper's values."""

import pytest

from editprobe.report import write_tables
from editprobe.runs import RunConfig, read_samples, run_experiment

pytestmark = pytest.mark.integration


def test_memit_pipeline_on_smollm2(smollm2, tmp_path, monkeypatch):
    # A private statistics cache of 100 documents keeps the test to about a minute of CPU;
    # the product's default (1000 documents) is what `make demo` uses.
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))
    weights = {k: v.clone() for k, v in smollm2.model.state_dict().items() if "down_proj" in k}
    cfg = RunConfig.build({"model": "smollm2-135m", "methods": ["memit"], "datasets": ["counterfact-sample"],
                           "n": 6, "batch_size": 3, "out": tmp_path / "run", "overrides": {"mom2_n_samples": 100}})
    summary = run_experiment(cfg, loaded=smollm2, progress=False)

    after = smollm2.model.state_dict()
    assert all(after[k].equal(v) for k, v in weights.items())  # every run restores the model
    data = summary["datasets"]["counterfact-sample"]
    assert data["n_records"] == 6 and sum(data["negation_rules"].values()) == 6
    assert data["factcheck_no_edit"]["chat_template"] is True  # SmolLM2-Instruct has one
    (result,) = summary["results"]
    neg, fc = result["negation"], result["factcheck"]
    assert neg["PP"] >= 80.0  # 6 edits of a 135M model: the edit itself works
    assert all(0.0 <= neg[k] <= 100.0 for k in ("PN", "NN", "NP"))
    assert fc["Eff"] == neg["PP"]
    samples = read_samples(tmp_path / "run")
    settings = {s["setting"] for s in samples}
    assert {"PP", "PN", "NN", "NP"} <= settings
    pp = [s for s in samples if s["setting"] == "PP" and s["method"] == "memit"]
    assert len(pp) == 6 and all(s["generated"] is not None for s in pp)
    text = write_tables([summary], tmp_path / "report")
    assert "No edit" in text and "memit" in text
