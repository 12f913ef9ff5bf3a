"""`editprobe study` (local backend) on tiny models: a grid from one file, one directory per
run, a status per run, a failed run that does not stop the others, resume after a fix or a
SIGKILL, and `report` over the whole study."""

from __future__ import annotations

import signal
import subprocess

import pytest
import yaml
from cli_helpers import deterministic_tables, invoke
from kill_driver import command
from test_runs_helpers import subprocess_env


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


def _study_file(ws, path, extra_runs=()) -> str:
    study = {
        "defaults": {"model": str(ws["model"]), "hparams": "tiny", "n": 3, "batch_size": 3,
                     "negation_table": str(ws["negations"]), "probes": ["negation", "factcheck"],
                     "overrides": {"mom2_corpus": str(ws["corpus"])}},
        "runs": [{"methods": ["memit"], "datasets": [str(ws["data"])], "preserve_previous": [True, False]},
                 *extra_runs],
    }
    path.write_text(yaml.safe_dump(study))
    return str(path)


def test_a_study_runs_its_grid_and_reports_it(ws, tmp_path):
    study = _study_file(ws, tmp_path / "grid.yaml")
    result = invoke(["study", study, "--out", str(tmp_path / "s"), "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "all 2 runs finished" in result.stdout
    # off a terminal each run's batches are plain progress lines on stderr
    assert result.stderr.count("editing batch 1/1 (3/3 records)") == 4, result.stderr  # 2 runs x 2 stages
    status = invoke(["study", str(tmp_path / "s"), "--status"])
    assert status.stdout.splitlines() == ["00__model__memit__cf__kp__seed0: finished",
                                          "00__model__memit__cf__nokp__seed0: finished"]
    report = invoke(["report", str(tmp_path / "s"), "--out", str(tmp_path / "tables")])
    assert report.exit_code == 0, report.output
    assert "With and without the preserved keys" in report.stdout  # both K_p values: Table 6
    assert "| memit (with K_p) |" in report.stdout and "| memit (no K_p) |" in report.stdout
    again = invoke(["study", study, "--out", str(tmp_path / "s")])  # the same study again: nothing redone
    assert again.exit_code == 0 and "all 2 runs finished" in again.stdout


def test_a_failed_run_never_stops_the_others_and_resume_retries_it(ws, tmp_path):
    missing = tmp_path / "later.json"
    study = _study_file(ws, tmp_path / "grid.yaml", [{"methods": ["memit"], "datasets": [str(missing)]}])
    result = invoke(["study", study, "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 runs failed")
    lines = invoke(["study", str(tmp_path / "s"), "--status"]).stdout.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["finished", "finished", "failed"]
    assert "later.json: no such file" in lines[2]
    missing.write_text((ws["data"]).read_text())
    resumed = invoke(["study", str(tmp_path / "s"), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "all 3 runs finished" in resumed.stdout


@pytest.mark.parametrize("content,message", [
    ("runs: 3\n", "field 'runs'"),
    ("- a\n", "a study file must be a mapping"),
    ("runs: [{methods: [memit], bogus_field: 1}]\n", "runs[0] (model smollm2-135m): run config: field 'bogus_field'"),
    ("runs: [{methods: [nope]}]\ndefaults: {n: 0}\n", "field 'n'"),
])
def test_a_bad_study_file_is_one_line_before_any_work(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    result = invoke(["study", str(path), "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and message in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists()


def test_a_killed_study_resumes_to_the_report_of_an_uninterrupted_one(ws, tmp_path):
    study = _study_file(ws, tmp_path / "grid.yaml")
    reference = invoke(["study", study, "--out", str(tmp_path / "ref")])
    assert reference.exit_code == 0, reference.output
    # SIGKILL right after the first run finished: the second is left pending or running.
    done = subprocess.run(command("editprobe.runs.store:RunDir.finish:1:after",
                                  ["study", study, "--out", str(tmp_path / "killed"), "--threads", "1"]),
                          env=subprocess_env(ws["root"]), capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    states = [line.split(": ")[1] for line in invoke(["study", str(tmp_path / "killed"), "--status"]).stdout.splitlines()]
    assert states[0] == "finished" and states[1] in ("running", "pending")
    assert invoke(["study", str(tmp_path / "killed"), "--resume"]).exit_code == 0
    tables = [invoke(["report", str(tmp_path / d), "--out", str(tmp_path / f"t-{d}")]).stdout for d in ("ref", "killed")]
    assert "### Cost" in tables[0]
    assert deterministic_tables(tables[0]) == deterministic_tables(tables[1])


def test_status_shows_a_runs_latest_line_and_where_a_killed_one_stopped(ws, tmp_path):
    study = _study_file(ws, tmp_path / "grid.yaml")
    # SIGKILL right after the first run announced its first edited stage's probes
    done = subprocess.run(command("editprobe.runs.loop:Experiment._announce:2:after",
                                  ["study", study, "--out", str(tmp_path / "s"), "--threads", "1"]),
                          env=subprocess_env(ws["root"]), capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    first = invoke(["study", str(tmp_path / "s"), "--status"]).stdout.splitlines()[0]
    assert first == ("00__model__memit__cf__kp__seed0: interrupted: its process ended without finishing it; "
                     "--resume continues it from its checkpoints (its last line: cf memit positive: negation, "
                     "factcheck on 3 records)"), first


def test_the_study_files_names_still_import_from_studies_study():
    from editprobe.studies import spec, study

    assert (study.Study, study.StudyEntry, study.StudyError, study.load_study, study.expand) == (
        spec.Study, spec.StudyEntry, spec.StudyError, spec.load_study, spec.expand)


def test_split_gives_one_run_per_method_and_dataset(tmp_path):
    from pathlib import Path

    from editprobe.studies.study import Study, expand

    study = Study.model_validate({"defaults": {"n": 2}, "runs": [
        {"methods": ["memit", "alphaedit"], "datasets": ["counterfact-sample", "zsre-sample"],
         "split": ["methods", "datasets"]},
        {"methods": ["memit", "alphaedit"], "datasets": ["counterfact-sample", "zsre-sample"], "split": ["methods"]}]})
    runs = expand(study, Path(tmp_path))
    assert [(r.config.methods, r.config.datasets) for r in runs] == [
        (("memit",), ("counterfact-sample",)), (("memit",), ("zsre-sample",)),
        (("alphaedit",), ("counterfact-sample",)), (("alphaedit",), ("zsre-sample",)),
        (("memit",), ("counterfact-sample", "zsre-sample")), (("alphaedit",), ("counterfact-sample", "zsre-sample"))]


def test_the_shipped_study_files_expand():
    from pathlib import Path

    from editprobe.studies.study import expand, load_study

    root = Path(__file__).resolve().parents[1] / "studies"
    paper = expand(load_study(root / "paper.yaml"), Path("/tmp/never-written"))
    # the nine baselines with K_p, Table 6's eight without, RLEdit's two rows (tests/test_study_paper.py: each)
    assert len(paper) == 2 * 9 * 4 + 8 + 2
    assert {r.config.profile for r in paper} == {"paper"} and {r.config.dtype for r in paper} == {"float32"}
    assert {(r.config.n, r.config.batch_size) for r in paper} == {(2000, 100)}
    assert sum(r.config.preserve_previous is False for r in paper) == 8
    assert {r.backend_settings["ray"].num_gpus for r in paper} == {1}
    smollm2 = expand(load_study(root / "smollm2.yaml"), Path("/tmp/never-written"))
    assert {d for r in smollm2 for d in r.config.datasets} == {"counterfact-sample", "zsre-sample"}
    assert {m for r in smollm2 for m in r.config.methods} == {"rome", "memit", "emmet", "alphaedit", "rect", "prune",
                                                             "pmet", "adaedit", "namet", "memit_lti"}
    # The results page's study: one run per method and dataset (each lands and resumes on its own),
    # CounterFact's ten first; RLEdit's two last (they need its trained network).
    results = expand(load_study(root / "results.yaml"), Path("/tmp/never-written"))
    assert all(len(r.config.methods) == 1 and len(r.config.datasets) == 1 for r in results)
    assert [r.config.datasets[0] for r in results] == ["counterfact-sample"] * 10 + ["zsre-sample"] * 10 + \
        ["counterfact-sample", "zsre-sample"]
    assert {r.config.methods[0] for r in results[:10]} == {m for r in smollm2 for m in r.config.methods}
    assert {(r.config.n, r.config.batch_size, r.config.preserve_previous) for r in results} == {(100, 20, True)}


def test_the_negation_remedies_study_expands_with_each_runs_settings():
    from pathlib import Path

    from editprobe.runs.plan import check_overrides, plan_method
    from editprobe.studies.study import expand, load_study

    path = Path(__file__).resolve().parents[1] / "studies" / "negation-remedies.yaml"
    runs = expand(load_study(path), Path("/tmp/never-written"))
    got = sorted((r.config.methods[0], tuple(sorted(r.config.overrides.items()))) for r in runs)
    assert got == [("alphaedit", ()), ("ft", ()), ("grace", ()), ("ike", ()), ("memit", ()),
                   ("memit", (("locate", "last-token"),)), ("memit", (("negation", "defend"),)),
                   ("memit", (("targets", "forward-replay"),)), ("wise", ())]
    # FE-MEMIT's positive model is saved (docs/evaluate.md), and only it: the others' runs stay as they were
    assert [r.config.overrides for r in runs if r.config.save_model] == [{"targets": "forward-replay"}]
    assert {(r.config.n, r.config.batch_size) for r in runs} == {(100, 20)}
    for r in runs:  # every run's settings resolve (shipped files for the built-in model, known --set keys)
        check_overrides(r.config)
        for method in r.config.methods:
            plan_method(r.config, method)
