"""Never destroy a user's files, never report a result that was not computed: what editprobe
refuses to write into (directories it did not make, or made for another job), where its
files go (only under the directory named, with dataset keys that are slugs), the lock that
keeps two processes out of one directory, and swaps a kill interrupted.

The one-line refusals run through the failure harness (failure_harness.py); the two-process
and kill cases run the real CLI in subprocesses (kill_driver.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path

import pytest
from cli_helpers import invoke
from failure_harness import (  # noqa: F401 - ws is a fixture
    Case, check_case, earlier_edit_result, edit_args, parametrize, run_args, write, ws)
from kill_driver import command

from editprobe.errors import EditprobeWarning
from test_runs_helpers import comparable, subprocess_env


def _model_copy(ws: dict, tmp: Path) -> None:
    shutil.copytree(ws["model"], tmp / "out")


def _foreign(ws: dict, tmp: Path) -> None:
    write(tmp / "out" / "config.json", '{"model_type": "llama"}')


def _user_file(tmp: Path, name: str, text: str = "mine") -> Path:
    return write(tmp / name, text)


SHIPPED_DEMO = str(resources.files("editprobe.runs").joinpath("builtin/demo.yaml"))

CASES = [
    Case("run-out-is-a-model-directory", lambda ws, t: run_args(ws, t / "out"),
         ("not a run directory", "config.json", ".editprobe.json"), setup=_model_copy),
    Case("run-resume-in-a-model-directory", lambda ws, t: ["run", "--out", str(t / "out"), "--resume"],
         ("not a run directory",), setup=_model_copy),
    Case("demo-fresh-refuses-a-directory-holding-config-json", lambda ws, t: ["demo", "--out", str(t / "out"),
                                                                             "--fresh"],
         ("not a run directory", "config.json"), setup=_foreign),
    Case("demo-fresh-with-the-shipped-config-refuses-it-too",
         lambda ws, t: ["demo", "--out", str(t / "out"), "--fresh", "--config", SHIPPED_DEMO],
         ("not a run directory",), setup=_foreign),
    Case("run-out-holds-an-edit-result", lambda ws, t: run_args(ws, t / "out"),
         ("holds an edit result directory, not a run directory",), setup=earlier_edit_result),
    Case("edit-overwrite-refuses-a-report-json-it-did-not-write",
         lambda ws, t: edit_args(ws, t / "out", "--overwrite"), ("not an edit result directory", "report.json"),
         setup=lambda ws, t: _user_file(t, "out/report.json", "{}") and None),
    Case("study-out-foreign",
         lambda ws, t: ["study", str(_user_file(t, "s.yaml", "runs:\n  - methods: [memit]\n")), "--out", str(t / "out")],
         ("not a study directory",), setup=_foreign),
    Case("train-out-foreign",
         lambda ws, t: ["train", "rledit", "--model", str(ws["model"]), "--data", str(ws["data"]), "--settings", "tiny",
                        "--out", str(t / "out")],
         ("not a training directory",), setup=_foreign),
    Case("trace-out-foreign", lambda ws, t: ["trace", "--model", str(ws["model"]), "--data", str(ws["data"]),
                                             "--out", str(t / "out")],
         ("not a trace directory",), setup=_foreign),
    Case("analyze-out-foreign",
         lambda ws, t: ["analyze", "--model", str(ws["model"]), "--data", str(ws["data"]), "--hparams", "tiny",
                        "--out", str(t / "out")],
         ("not an analysis directory",), setup=_foreign),
    Case("report-out-foreign", lambda ws, t: ["report", str(t / "no-run"), "--out", str(t / "out")],
         ("not a report directory",), setup=_foreign),
    Case("report-html-is-a-users-file",
         lambda ws, t: ["report", str(t / "no-run"), "--out", str(t / "rep"), "--html", str(t / "out")],
         ("--html", "not an HTML report editprobe wrote"),
         setup=lambda ws, t: _user_file(t, "out", "<html>my page</html>") and None),
    Case("tune-overwrite-refuses-a-file-tune-did-not-write",
         lambda ws, t: ["tune", "--model", str(ws["model"]), "--data", str(ws["data"]), "--hparams", "tiny",
                        "--out", str(t / "out.yaml"), "--overwrite"],
         ("is not a file `editprobe tune` wrote",), out=lambda t: t / "out.yaml",
         setup=lambda ws, t: _user_file(t, "out.yaml", "layers: [1]\n") and None),
]


@parametrize(CASES)
def test_refused(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def test_overwrite_and_fresh_keep_a_users_files_and_name_them(ws, tmp_path):
    out = tmp_path / "edit"
    assert invoke(edit_args(ws, out)).exit_code == 0
    (out / "notes.txt").write_text("mine")
    again = invoke(edit_args(ws, out, "--overwrite"))
    assert again.exit_code == 0, again.output
    assert (out / "notes.txt").read_text() == "mine"
    assert "kept 1 entry editprobe did not write: notes.txt" in again.stderr
    run = tmp_path / "run"
    assert invoke(run_args(ws, run)).exit_code == 0
    (run / "notes.txt").write_text("mine")
    from editprobe.runs import RunDir

    with pytest.warns(EditprobeWarning, match="kept 1 entry editprobe did not write: notes.txt"):
        RunDir(run).reset()  # what demo --fresh does
    assert sorted(p.name for p in run.iterdir()) == [".editprobe.json", ".editprobe.lock", "notes.txt"]


# --- where files go: only under --out, keys that are slugs -----------------------------------------


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_odd_dataset_names_write_only_under_out_and_never_share_results(ws, tmp_path):
    data = ws["data"].read_text()
    specs = [write(tmp_path / "data" / "facts", data),  # no extension
             write(tmp_path / "data" / "my facts.json", data),  # a space
             write(tmp_path / "data" / "données.json", data),  # unicode
             write(tmp_path / "a" / "cf.json", data), write(tmp_path / "b" / "cf.json", data)]  # one stem twice
    dotted = tmp_path / "data" / ".." / "a" / "cf.json"  # the same file as a/cf.json, spelt with ..
    before = _files(tmp_path)
    out = tmp_path / "runs" / "odd"

    def args(datasets) -> list[str]:
        return ["run", "--model", str(ws["model"]), "--method", "memit", *[x for d in datasets for x in ("--data", str(d))],
                "--n", "2", "--batch-size", "2", "--out", str(out), "--hparams", "tiny",
                "--set", f"mom2_corpus={ws['corpus']}", "--negation-table", str(ws["negations"]), "--threads", "1"]

    result = invoke(args(specs))
    assert result.exit_code == 0, result.output
    new = _files(tmp_path) - before
    assert new and all(out in p.parents for p in new), sorted(str(p) for p in new if out not in p.parents)
    keys = list(json.loads((out / "summary.json").read_text())["datasets"])
    assert keys[:3] == ["facts", "my-facts", "donn-es"]
    assert keys[3].startswith("cf-") and keys[4].startswith("cf-") and keys[3] != keys[4]
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert len(stages) == 5 * 3 and all("/" not in s and " " not in s for s in stages)
    same = invoke(args([specs[3], dotted]))
    assert same.exit_code == 2 and "name the same dataset file" in same.stderr


def test_a_dataset_without_extension_keeps_each_runs_results_its_own(ws, tmp_path):
    """The issue's reproduction: stage files beside the data made a second run with other
    settings report the first one's numbers."""
    facts = write(tmp_path / "data" / "facts", ws["data"].read_text())
    a = invoke(run_args(ws, tmp_path / "a", data=facts))
    assert a.exit_code == 0, a.output
    b = invoke(run_args(ws, tmp_path / "b", "--set", "v_lr=0.00001", "--set", "v_num_grad_steps=1", data=facts))
    assert b.exit_code == 0, b.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["facts"]
    summary = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert summary["results"][0]["hparams"]["v_lr"] == 0.00001
    pp = {d: json.loads((tmp_path / d / "summary.json").read_text())["results"][0]["probes"]["negation"]["metrics"]
          ["PP"]["value"] for d in "ab"}
    assert pp["a"] > pp["b"] == 0.0


# --- two processes, one directory ----------------------------------------------------------------


def _paused(ws, spec: str, args: list[str], resume_file: Path) -> subprocess.Popen:
    env = {**subprocess_env(ws["root"]), "KILL_DRIVER_RESUME": str(resume_file)}
    proc = subprocess.Popen(command(spec, args), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not Path(f"{resume_file}.reached").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return proc


def test_two_runs_on_one_directory_one_refuses_and_the_other_equals_an_uninterrupted_run(ws, tmp_path):
    out = tmp_path / "run"
    go = tmp_path / "go"
    first = _paused(ws, "editprobe.runs.store:RunDir.open:1:pause", run_args(ws, out), go)
    second = invoke(run_args(ws, out))
    assert second.exit_code == 2
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and f"pid {first.pid} on {socket.gethostname()}" in line, line
    assert "in use by another editprobe process" in line
    resume = invoke(["run", "--out", str(out), "--resume"])
    assert resume.exit_code == 2 and f"pid {first.pid}" in resume.stderr
    go.touch()
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr
    alone = tmp_path / "alone"
    assert invoke(run_args(ws, alone)).exit_code == 0
    read = lambda d: comparable(json.loads((d / "summary.json").read_text()))  # noqa: E731
    assert read(out) == read(alone)
    assert (out / "samples.jsonl").read_text() == (alone / "samples.jsonl").read_text()


def _study_file(ws, tmp: Path) -> Path:
    return write(tmp / "study.yaml", json.dumps({
        "defaults": {"model": str(ws["model"]), "datasets": [str(ws["data"])], "n": 2, "batch_size": 2,
                     "hparams": "tiny", "negation_table": str(ws["negations"]),
                     "overrides": {"mom2_corpus": str(ws["corpus"])}},
        "runs": [{"methods": ["memit"], "preserve_previous": [True, False]}]}))


def test_two_studies_on_one_directory_and_status_running_then_interrupted(ws, tmp_path):
    study = _study_file(ws, tmp_path)
    out = tmp_path / "study"
    go = tmp_path / "go"
    first = _paused(ws, "editprobe.runs.store:RunDir.open:1:pause", ["study", str(study), "--out", str(out)], go)
    second = invoke(["study", str(study), "--out", str(out)])
    assert second.exit_code == 2 and f"pid {first.pid}" in second.stderr and "in use" in second.stderr
    status = invoke(["study", str(out), "--status"])
    assert status.exit_code == 0 and ": running" in status.stdout.splitlines()[0], status.stdout
    first.send_signal(signal.SIGKILL)
    first.communicate(timeout=60)
    status = invoke(["study", str(out), "--status"])
    assert status.stdout.splitlines()[0].split(": ")[1] == "interrupted", status.stdout
    resumed = invoke(["study", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert all(line.endswith(": finished") for line in invoke(["study", str(out), "--status"]).stdout.splitlines())


# --- a swap a kill interrupted -------------------------------------------------------------------


def test_a_run_killed_between_the_two_renames_of_a_checkpoint_swap_resumes_exactly(ws, tmp_path):
    out = tmp_path / "run"
    args = run_args(ws, out, n=4)  # two batches: the second checkpoint replaces the first
    done = subprocess.run(command("editprobe.paths:_set_aside:1:after", args), env=subprocess_env(ws["root"]),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == -signal.SIGKILL, done.stderr
    aside = [p for p in out.rglob(".*.old")]
    assert aside, "the kill should have fallen between the two renames of a directory swap"
    stage = aside[0].name[1:-len(".old")]
    assert not (aside[0].parent / stage).exists()
    resumed = invoke(["run", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert not [p for p in out.rglob(".*") if p.name not in (".editprobe.json", ".editprobe.lock")]
    alone = tmp_path / "alone"
    assert invoke(run_args(ws, alone, n=4)).exit_code == 0
    # The edit losses of the batch whose checkpoint the kill cut are not in progress.json
    # (written after the checkpoint): None there, as after any kill at that point.
    read = lambda d: [{k: v for k, v in r.items() if k != "edit_reports"}  # noqa: E731
                      for r in comparable(json.loads((d / "summary.json").read_text()))["results"]]
    assert read(out) == read(alone)


def test_the_lock_file_names_its_holder_while_held_and_nobody_after(ws, tmp_path):
    from editprobe.locks import read_holder

    out = tmp_path / "run"
    go = tmp_path / "go"
    first = _paused(ws, "editprobe.runs.store:RunDir.open:1:pause", run_args(ws, out), go)
    holder = read_holder(out / ".editprobe.lock")
    assert holder.pid == first.pid and holder.host == socket.gethostname() and "run" in holder.command
    go.touch()
    first.communicate(timeout=600)
    assert first.returncode == 0
    assert read_holder(out / ".editprobe.lock").pid is None and os.path.getsize(out / ".editprobe.lock") == 0


def test_a_study_with_and_without_kp_on_an_extensionless_dataset_runs_both_edits(ws, tmp_path):
    """The issue's reproduction: with stage files beside the data, the no-K_p run found the
    K_p run's stages and reported them as its own."""
    facts = write(tmp_path / "data" / "facts", ws["data"].read_text())
    study = write(tmp_path / "study.yaml", json.dumps({
        "defaults": {"model": str(ws["model"]), "datasets": [str(facts)], "n": 4, "batch_size": 2,
                     "hparams": "tiny", "negation_table": str(ws["negations"]),
                     "overrides": {"mom2_corpus": str(ws["corpus"])}},
        "runs": [{"methods": ["memit"], "preserve_previous": [True, False]}]}))
    result = invoke(["study", str(study), "--out", str(tmp_path / "study")])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["facts"]
    rows = {}
    for run in sorted((tmp_path / "study" / "runs").iterdir()):
        row = json.loads((run / "summary.json").read_text())["results"][0]
        rows[row["preserve_previous"]] = row
    assert set(rows) == {True, False}
    # the second batch's solve differs with and without the first batch's keys
    assert rows[True]["edit_reports"] != rows[False]["edit_reports"] or rows[True]["probes"] != rows[False]["probes"]
