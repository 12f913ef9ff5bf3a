"""Plan once, then run (runs/plan.py): the plan checks and reads everything before a model
loads, and each dataset file is parsed once per job — a spy on the loader's one parse
(``data.loading.read_entries``) around a run, an edit, a tune and a two-run study on the
trained tiny model. The default path (no --hparams, no --profile) decides a tuned file by
the dataset's kind, which the plan takes from the same parse.

Before the plan (commit 15774df) the default path parsed each dataset 1 + 6·M times per run
(M methods: 7 with one, 13 with two) and twice per edit; with --hparams once."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
from test_runs_helpers import config

from editprobe.data import loading
from editprobe.editing.settings import model_keys as keys_model
from editprobe.models import load_model


@pytest.fixture(scope="module")
def ws(run_ws):
    second = run_ws["root"] / "cf2.json"  # a second dataset file: the same facts, another name
    if not second.is_file():
        shutil.copy(run_ws["data"], second)
    return {**run_ws, "data2": second}


@pytest.fixture(scope="module")
def loaded(ws):
    return load_model(str(ws["model"]))


@pytest.fixture
def reads(ws, monkeypatch):
    """Parses per file name; the tiny model's directory stands in for a model with shipped
    ("tiny") files, so runs without --hparams take the default path."""
    counts: Counter[str] = Counter()
    parse = loading.read_entries

    def counting(path: Path):
        counts[Path(path).name] += 1
        return parse(path)

    monkeypatch.setattr(loading, "read_entries", counting)
    monkeypatch.setitem(keys_model.KNOWN_MODELS, str(ws["model"]), "tiny")
    return counts


def _run(ws, out: Path, **fields):
    return config(ws, out, **{"hparams": None, "n": 2, "batch_size": 2, "probes": ("negation", "factcheck"), **fields})


def test_a_run_on_the_default_path_parses_each_dataset_once(ws, loaded, reads, tmp_path):
    from editprobe.runs import Experiment, RunPlan, read_summary
    from editprobe.runs.summary import RunSummary

    cfg = _run(ws, tmp_path / "run", methods=("memit", "alphaedit"), datasets=(str(ws["data"]), str(ws["data2"])))
    plan = RunPlan.build(cfg, loaded=loaded)
    assert not (tmp_path / "run").exists()  # the plan writes nothing
    assert [(d.key, d.kind, len(d.records), d.negation.n_records) for d in plan.datasets] == \
        [("cf", "counterfact", 2, 2), ("cf2", "counterfact", 2, 2)]
    assert sorted(plan.methods) == [("alphaedit", "cf"), ("alphaedit", "cf2"), ("memit", "cf"), ("memit", "cf2")]
    assert plan.method("memit", plan.datasets[0]).choice.chosen_by == "shipped default"  # no tiny@counterfact file
    assert [p.name for p in plan.probes] == ["negation", "factcheck"]
    summary = Experiment(plan, loaded=loaded, progress=False).run()
    assert isinstance(summary, RunSummary) and summary.model_dump(mode="json") == read_summary(tmp_path / "run")
    assert dict(reads) == {"cf.json": 1, "cf2.json": 1}


def test_a_run_with_explicit_hparams_parses_each_dataset_once(ws, loaded, reads, tmp_path):
    from editprobe.runs import run_experiment

    run_experiment(_run(ws, tmp_path / "run", hparams="tiny"), loaded=loaded, progress=False)
    assert dict(reads) == {"cf.json": 1}


def test_an_edit_parses_its_dataset_once(ws, loaded, reads, tmp_path):
    from editprobe.jobs.edit import EditConfig, EditJob

    cfg = EditConfig.build({"model": str(ws["model"]), "method": "memit", "data": str(ws["data"]), "n": 2,
                            "batch_size": 2, "out": tmp_path / "edit",
                            "overrides": {"mom2_corpus": str(ws["corpus"])}})
    job = EditJob(cfg, loaded=loaded)
    job.preflight()
    job.run()
    assert dict(reads) == {"cf.json": 1}


def test_a_tune_parses_its_dev_and_evaluation_files_once(ws, loaded, reads, tmp_path):
    from editprobe.jobs.tune.search import Tuner, TuneConfig

    dev, evaluation = tmp_path / "dev.json", tmp_path / "eval.json"
    records = json.loads(Path(ws["data"]).read_text())
    for r in records:  # "... is" templates, which the rules negate
        r["requested_rewrite"]["prompt"] += " is"
    dev.write_text(json.dumps(records))
    for r in records:  # an evaluation set the dev records do not overlap
        r["requested_rewrite"]["subject"] = "Zed" + r["requested_rewrite"]["subject"]
    evaluation.write_text(json.dumps(records))
    cfg = TuneConfig.build({"model": str(ws["model"]), "method": "memit", "data": str(dev), "out": tmp_path / "t.yaml",
                            "n": 2, "batch_size": 2, "trials": 1, "negative": False, "hparams": "tiny",
                            "evaluation": (str(evaluation),), "layers": (0, 1),
                            "overrides": {"mom2_corpus": str(ws["corpus"])}})
    tuner = Tuner(cfg, loaded=loaded)
    tuner.preflight()
    tuner.run()
    assert dict(reads) == {"dev.json": 1, "eval.json": 1}


def test_a_study_parses_each_dataset_once_per_run(ws, loaded, reads, tmp_path):
    from editprobe.studies.study import StudyDir, run_study

    study = tmp_path / "study.yaml"
    study.write_text(json.dumps({
        "defaults": {"model": str(ws["model"]), "n": 2, "batch_size": 2, "negation_table": str(ws["negations"]),
                     "probes": ["negation"], "overrides": {"mom2_corpus": str(ws["corpus"])}},
        "runs": [{"methods": ["memit", "alphaedit"], "datasets": [str(ws["data"])], "split": ["methods"]}]}))
    study_dir = StudyDir(tmp_path / "s")
    with study_dir.work.hold():
        states = run_study(study_dir, study_dir.create(study), loaded=loaded)
    assert set(states.values()) == {"finished"}
    assert dict(reads) == {"cf.json": 2}


def test_every_job_has_the_shape_the_plan_names():
    from editprobe.runs import Experiment
    from editprobe.jobs.edit import EditJob
    from editprobe.runs.plan import Job
    from editprobe.jobs.train_rledit import TrainJob
    from editprobe.jobs.tune.search import Tuner

    assert all(issubclass(job, Job) for job in (Experiment, EditJob, Tuner, TrainJob))
