"""Real model, small N: the whole experiment (no-edit baseline, positive and negated MEMIT
runs, fact-checking in the chat template) on the built-in SmolLM2 with built-in CounterFact
records, then the report tables. Numbers are checked for sense, not for the paper's values."""

import pytest

from editprobe.report import write_tables
from editprobe.runs import RunConfig, read_samples, run_experiment
from editprobe.runs.summary import parse_summary

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
    typed = parse_summary(summary)
    data = typed.datasets["counterfact-sample"]
    assert data.n_records == 6 and sum(data.negation_rules.values()) == 6
    # The default probes: the paper's two, the classic metrics of CounterFact, perplexity, the battery.
    assert data.probes == ["negation", "factcheck", "efficacy", "paraphrase", "neighborhood", "perplexity",
                           "question-forms", "two-choice", "grounded"]
    assert set(data.no_edit) == set(data.probes)
    (result,) = typed.results
    assert result.probes["factcheck"].details["chat_template"] is True  # SmolLM2-Instruct has one
    assert result.value("negation", "PP") >= 80.0  # 6 edits of a 135M model: the edit itself works
    assert all(0.0 <= result.value("negation", k) <= 100.0 for k in ("PN", "NN", "NP"))
    assert result.value("factcheck", "Eff") == result.value("negation", "PP")
    # The edit moves the classic efficacy far above the unedited model's, and the
    # probability comparison agrees with the exact match it sits beside.
    assert result.value("efficacy", "prob") >= 80.0 > data.no_edit["efficacy"].value("prob")
    assert result.value("efficacy", "EM") == result.value("negation", "PP")
    assert data.no_edit["neighborhood"].value("EM") == 100.0  # the reference is the unedited model itself
    assert 1.0 < data.no_edit["perplexity"].value("ppl") < 1000.0
    samples = read_samples(tmp_path / "run")
    settings = {s["setting"] for s in samples}
    assert {"PP", "PN", "NN", "NP"} <= settings
    pp = [s for s in samples if s["setting"] == "PP" and s["method"] == "memit"]
    assert len(pp) == 6 and all(s["generated"] is not None for s in pp)
    text = write_tables([typed], tmp_path / "report")
    assert "No edit" in text and "memit" in text
    assert "Classic edit metrics" in text and "efficacy prob" in text and "teacher-forced probability" in text
