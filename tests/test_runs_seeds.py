"""Seeds that vary something (docs/protocol.md#seeds): the run seed drives the context
templates (seed 0 keeps the method's ``template_seed``: the edits of every run made before),
``sample: N`` draws the records by seed, and ``report`` aggregates runs that differ only by seed."""

from __future__ import annotations

import pytest
import torch
import yaml
from cli_helpers import invoke
from test_runs_helpers import config

from editprobe.editing.lte.context import generate_templates, run_template_seed
from editprobe.errors import UserError
from editprobe.models import load_model
from editprobe.runs import RunPlan
from editprobe.runs.config import RunConfigError
from editprobe.runs.plan import MethodPlan
from editprobe.runs.sequential import edit_sequentially


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


def test_the_template_seed_is_the_methods_at_run_seed_0_and_derived_otherwise():
    assert run_template_seed(0, 0) == 0 and run_template_seed(0, 7) == 7
    derived = {run_template_seed(seed, 0) for seed in (1, 2, 3)}
    assert len(derived) == 3 and 0 not in derived
    assert run_template_seed(1, 0) == run_template_seed(1, 0) != run_template_seed(1, 7)  # stable, and both count


def _edited(ws, method: MethodPlan, requests, seed: int):
    """The weights and templates after editing a fresh copy of the tiny model with ``method``."""
    loaded = load_model(str(ws["model"]))
    editor = method.make_editor(loaded.model, loaded.tokenizer, model_id=str(ws["model"]))
    edit_sequentially(editor, requests, 3, seed=seed, stage="positive")
    return {k: v.clone() for k, v in loaded.model.state_dict().items()}, editor.templates().all


def test_two_seeds_edit_differently_and_seed_0_edits_as_before(ws, tmp_path):
    plans = {seed: RunPlan.build(config(ws, tmp_path / f"s{seed}", seed=seed, n=3)) for seed in (0, 1, 2)}
    dataset = plans[0].datasets[0]
    requests = dataset.negation.positive_requests()
    methods = {seed: plan.method("memit", plan.datasets[0]) for seed, plan in plans.items()}
    file_seed = MethodPlan.build("memit", plans[0].config, plans[0].config.hparams_overrides()).hparams.template_seed
    assert methods[0].hparams.template_seed == file_seed  # recorded in the summary's hparams
    assert len({m.hparams.template_seed for m in methods.values()}) == 3
    # Before seeds reached the templates, every seed edited with the file's template seed.
    before = MethodPlan.build("memit", plans[0].config, plans[0].config.hparams_overrides())
    weights_before, templates_before = _edited(ws, before, requests, seed=0)
    results = {seed: _edited(ws, method, requests, seed) for seed, method in methods.items()}
    loaded = load_model(str(ws["model"]))
    assert templates_before == generate_templates(loaded.model, loaded.tokenizer, before.editor_cls(
        loaded.model, loaded.tokenizer, before.hparams).template_spec(), seed=file_seed).all
    assert results[0][1] == templates_before
    assert all(torch.equal(weights_before[k], v) for k, v in results[0][0].items())
    assert results[1][1] != results[2][1] != results[0][1]
    assert any(not torch.equal(results[1][0][k], v) for k, v in results[2][0].items())


def test_sample_draws_records_by_seed(ws, tmp_path):
    def ids(seed, sample=3, n=6):
        plan = RunPlan.build(config(ws, tmp_path / "o", seed=seed, n=n, sample=sample))
        return [r.id for r in plan.datasets[0].records]

    first = [r.id for r in RunPlan.build(config(ws, tmp_path / "o", n=3)).datasets[0].records]
    drawn = {seed: ids(seed) for seed in (0, 1, 2, 3)}
    assert ids(1) == drawn[1] and len(drawn[1]) == 3  # reproducible
    assert len({tuple(v) for v in drawn.values()}) > 1 and drawn[0] != first  # records or their order vary
    assert sorted(ids(1, sample=6)) == sorted(ids(0, sample=6))  # all of them: only the order varies
    with pytest.raises(RunConfigError, match=r"field 'sample'.*raise n"):
        config(ws, tmp_path / "o", n=3, sample=4)
    with pytest.raises(UserError, match="sample: 7 draws more records than the 6"):
        RunPlan.build(config(ws, tmp_path / "o", n=10, sample=7))


def test_report_aggregates_a_study_over_two_seeds(ws, tmp_path):
    study = {"defaults": {"model": str(ws["model"]), "hparams": "tiny", "n": 6, "sample": 3, "batch_size": 3,
                          "negation_table": str(ws["negations"]), "probes": ["negation"],
                          "overrides": {"mom2_corpus": str(ws["corpus"])}},
             "runs": [{"methods": ["memit"], "datasets": [str(ws["data"])], "seeds": [0, 1]}]}
    (tmp_path / "seeds.yaml").write_text(yaml.safe_dump(study))
    result = invoke(["study", str(tmp_path / "seeds.yaml"), "--out", str(tmp_path / "s"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    report = invoke(["report", str(tmp_path / "s"), "--out", str(tmp_path / "tables")])
    assert report.exit_code == 0, report.output
    assert "Over seeds: mean and standard deviation" in report.stdout
    import pandas as pd

    seeds = pd.read_csv(tmp_path / "tables" / "seeds.csv")
    assert list(seeds.columns) == ["Model", "Dataset", "Method", "Metric", "seeds", "mean", "mean lo", "mean hi",
                                   "mean n", "sd"]
    pp = seeds[seeds["Metric"] == "negation PP"].iloc[0]
    # the interval pooled over the records (records.jsonl) holds the mean; n: the records pooled
    pooled = seeds.dropna(subset=["mean lo"])
    assert pp["mean n"] >= 3 and len(pooled) == len(seeds)  # the negation probe keeps every metric's records
    assert ((pooled["mean lo"] <= pooled["mean"] + 0.05) & (pooled["mean"] <= pooled["mean hi"] + 0.05)).all()
    negation = pd.read_csv(tmp_path / "tables" / "negation.csv")
    values = negation[negation["Method"].isin(["memit (seed 0)", "memit (seed 1)"])]["PP"].tolist()
    assert pp["seeds"] == 2 and len(values) == 2
    assert pp["mean"] == pytest.approx(sum(values) / 2)
    assert pp["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    assert "negation PN|PP" in set(seeds["Metric"]) and r"| negation PN\|PP |" in report.stdout


def test_edit_seeds_drive_the_templates_as_runs_do(ws, tmp_path):
    from safetensors.torch import load_file

    from editprobe.jobs.edit import EditConfig, EditJob

    def edit(seed):
        cfg = EditConfig(model=str(ws["model"]), method="memit", data=str(ws["data"]), n=3, batch_size=3,
                         out=tmp_path / f"e{seed}", hparams="tiny", overrides={"mom2_corpus": str(ws["corpus"])},
                         negation_table=str(ws["negations"]), seed=seed)
        report = EditJob(cfg).run()
        return report["hparams"], load_file(tmp_path / f"e{seed}" / "state" / "deltas.safetensors")

    before = MethodPlan.build("memit", config(ws, tmp_path / "o"), {"mom2_corpus": str(ws["corpus"])}).hparams
    edits = {seed: edit(seed) for seed in (0, 1)}
    assert edits[0][0] == before.model_dump(mode="json")  # seed 0: the file's template_seed, as before
    assert edits[1][0]["template_seed"] == run_template_seed(1, before.template_seed)  # recorded in report.json
    assert any(not torch.equal(edits[0][1][k], v) for k, v in edits[1][1].items())


def test_rledit_s_trained_network_does_not_follow_the_run_seed():
    from editprobe.editing.rledit.editor import RLEditEditor, RLEditHParams

    hp = RLEditHParams(hypernet="somewhere")
    assert RLEditEditor.seed_fields == () and RLEditEditor.run_seeded_hparams(hp, 3) is hp


def test_the_pooled_interval_by_hand():
    """Each resample draws the records once for every seed and averages the seeds' means."""
    import numpy as np

    from editprobe.probes.intervals import RESAMPLES, bootstrap
    from editprobe.report.seeds import pooled_interval

    seeds = [{"a": 100.0, "b": 0.0, "c": 100.0, "d": 100.0}, {"a": 0.0, "b": 0.0, "c": 100.0, "d": 50.0}]
    ids = ["a", "b", "c", "d"]
    draws = np.random.default_rng(0).integers(0, 4, size=(RESAMPLES, 4))
    pooled = [np.mean([np.mean([s[ids[i]] for i in row]) for s in seeds]) for row in draws]
    lo, hi = np.percentile(pooled, [2.5, 97.5])
    assert pooled_interval(seeds) == (round(float(lo), 1), round(float(hi), 1))
    # on shared records the mean of the seeds' means is the mean of the records' averages over seeds
    assert pooled_interval(seeds) == bootstrap([(seeds[0][r] + seeds[1][r]) / 2 for r in ids], scale=1.0)
    assert pooled_interval([seeds[0], {}]) is None  # a seed without values: no interval
    # seeds on other records (sample:): a resample averages each seed over the drawn records it has
    lo, hi = pooled_interval([{"a": 100.0, "b": 0.0}, {"c": 50.0, "d": 50.0}])
    assert lo <= 50.0 <= hi
