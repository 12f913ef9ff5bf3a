"""Ctrl-C anywhere: a real SIGINT at a chosen call (kill_driver.py), in-process (so a lock the
command failed to release would block the next command here) and in a subprocess (the real
exit code). Every command prints exactly ``error: interrupted`` and exits with 130, without
a traceback; what it leaves on disk is what a kill at the same point leaves, its directory
unlocked; the next command works. ``tune`` keeps the best of the trials that finished
(the harness: failure_harness.py)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass

import pytest
import yaml
from cli_helpers import invoke
from failure_harness import Case, check_case, edit_args, parametrize, run_args, write, ws  # noqa: F401 - ws: fixture
from kill_driver import arm, command
from test_runs_helpers import comparable, subprocess_env
from test_tune import _counterfact_file

from editprobe.workdir import WorkDir


@pytest.fixture(autouse=True)
def ctrl_c_reaches_python():
    """Python's own SIGINT handler for each test, whatever the test run inherited: a shell
    starts a background job (``make test &``) with SIGINT ignored, and an ignored SIGINT is
    inherited by the CLI subprocesses too, so no Ctrl-C would ever arrive."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)

INTERRUPTED = "error: interrupted"


@dataclass
class WhileWorking(Case):
    """Ctrl-C once the work started: status lines and progress bars came before the one
    error line."""

    @property
    def during_work(self) -> bool:
        return True


def sigint(at: str):
    """A Case's inject: SIGINT at ``MODULE:QUALNAME:K:before|after`` (undone after the case)."""
    return lambda mp: arm(f"{at}:INT", mp.setattr)


def resume_or_rerun(ws, t) -> list[str]:
    """What a user does next in a run directory that was interrupted."""
    out = t / "out"
    return ["run", "--out", str(out), "--resume"] if (out / "stages").is_dir() else run_args(ws, out)


def interrupted(id: str, args, at: str, working: bool = False, **fields) -> Case:
    then = fields.pop("then", args)
    return (WhileWorking if working else Case)(id, args, (INTERRUPTED,), code=130, inject=sigint(at), then=then,
                                               **fields)


def _edit(ws, t, *extra):
    return edit_args(ws, t / "out", "--batch-size", "1", *extra)  # two batches


CASES = [
    interrupted("interrupt-while-parsing-arguments", _edit, "typer._click.parser:_OptionParser.parse_args:2:before"),
    interrupted("interrupt-in-the-preflight", _edit, "editprobe.jobs.edit:read_datasets:1:after"),
    interrupted("interrupt-while-loading-the-model", _edit, "editprobe.models:load_model:1:after"),
    interrupted("interrupt-while-computing-c0", lambda ws, t: _edit(ws, t, "--set", "mom2_n_samples=90"),
                "editprobe.editing.lte.stats_store:save_file:1:before", working=True),
    interrupted("interrupt-between-edit-batches", _edit, "editprobe.editing.lte.engine:LTEEditor.apply:2:before",
                working=True),
    interrupted("interrupt-while-writing-the-edit-result", _edit, "editprobe.jobs.edit:move_into_place:1:after",
                working=True, out=lambda t: t / "elsewhere"),  # state/ in place, report.json (a result's mark) not yet
    interrupted("interrupt-run-right-after-opening-its-directory", lambda ws, t: run_args(ws, t / "out"),
                "editprobe.runs.store:RunDir.open:1:after", working=True),
    interrupted("interrupt-run-while-probing", lambda ws, t: run_args(ws, t / "out"),
                "editprobe.probes.builtin.negation:NegationProbe.measure:2:before", working=True,
                out=lambda t: t / "elsewhere", then=resume_or_rerun),  # the baseline is saved: --resume
    interrupted("interrupt-run-mid-rename", lambda ws, t: run_args(ws, t / "out"), "os:replace:4:before",
                working=True, out=lambda t: t / "elsewhere", then=resume_or_rerun),
]


@parametrize(CASES)
def test_ctrl_c(case: Case, ws, tmp_path, monkeypatch):
    check_case(case, ws, tmp_path, monkeypatch)


def _sigint_in_process(at: str, args: list[str]):
    with pytest.MonkeyPatch.context() as mp:
        arm(f"{at}:INT", mp.setattr)
        return invoke(args)


def _only_the_error_line(code: int, stdout: str, stderr: str) -> None:
    """Exit code 130; ``error: interrupted`` the one error line, and the last; no traceback
    (nor Optuna's log of a failed trial)."""
    assert code == 130, stdout + stderr
    assert "Traceback" not in stdout + stderr and "failed with" not in stderr
    assert [line for line in stderr.splitlines() if line.startswith("error")] == [INTERRUPTED], stderr
    assert stderr.endswith(INTERRUPTED + "\n"), stderr


def _interrupted_in_process(at: str, args: list[str]):
    result = _sigint_in_process(at, args)
    _only_the_error_line(result.exit_code, result.stdout, result.stderr)
    return result


def _interrupted_subprocess(ws, at: str, args: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(command(f"{at}:INT", args), env=subprocess_env(ws["root"]), capture_output=True, text=True,
                          timeout=300)
    _only_the_error_line(done.returncode, done.stdout, done.stderr)
    return done


def test_edit_interrupted_in_a_subprocess_exits_130_with_one_line(ws, tmp_path):
    out = tmp_path / "out"
    _interrupted_subprocess(ws, "editprobe.editing.lte.engine:LTEEditor.apply:2:before", _edit(ws, tmp_path))
    assert not (out / "report.json").exists()
    assert invoke(_edit(ws, tmp_path)).exit_code == 0


def test_edit_interrupted_while_writing_leaves_no_result_and_no_lock(ws, tmp_path):
    out = tmp_path / "out"
    _interrupted_in_process("editprobe.jobs.edit:move_into_place:1:after", _edit(ws, tmp_path))
    assert (out / "state").is_dir() and not (out / "report.json").exists()  # as a kill there leaves it
    assert WorkDir(out, "edit").holder() is None
    again = invoke(_edit(ws, tmp_path))  # no --overwrite: there is no result to replace
    assert again.exit_code == 0, again.output
    assert json.loads((out / "report.json").read_text())["n"] == 2


def test_run_interrupted_after_a_checkpoint_resumes_to_an_uninterrupted_runs_numbers(ws, tmp_path):
    out, reference = tmp_path / "out", tmp_path / "reference"
    args = run_args(ws, out, "--batch-size", "1")
    done = _interrupted_subprocess(ws, "editprobe.runs.store:RunDir.record_checkpoint:1:after", args)
    assert f"editprobe run --out {out} --resume continues it" in done.stdout
    assert not (out / "summary.json").exists()
    plain = invoke(args)
    assert plain.exit_code == 2 and "--resume" in plain.stderr  # work is there: never restarted silently
    resumed = invoke(["run", "--out", str(out), "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert invoke(run_args(ws, reference, "--batch-size", "1")).exit_code == 0
    summaries = [json.loads((d / "summary.json").read_text()) for d in (out, reference)]
    assert comparable(summaries[0]) == comparable(summaries[1])


def test_study_interrupted_shows_its_run_as_interrupted_and_resumes(ws, tmp_path):
    study = write(tmp_path / "study.yaml", yaml.safe_dump({
        "defaults": {"model": str(ws["model"]), "hparams": "tiny", "n": 2, "batch_size": 1,
                     "negation_table": str(ws["negations"]), "probes": ["negation"],
                     "overrides": {"mom2_corpus": str(ws["corpus"])}},
        "runs": [{"methods": ["memit"], "datasets": [str(ws["data"])], "seeds": [0, 1]}]}))
    out = tmp_path / "s"
    _interrupted_in_process("editprobe.editing.lte.engine:LTEEditor.apply:2:before",
                            ["study", str(study), "--out", str(out), "--threads", "1"])
    status = invoke(["study", str(out), "--status"]).stdout.splitlines()
    assert [line.split(": ")[1] for line in status] == ["interrupted", "pending"], status
    assert "--resume continues it" in status[0]
    resumed = invoke(["study", str(out), "--resume"])
    assert resumed.exit_code == 0 and "all 2 runs finished" in resumed.stdout, resumed.output


@pytest.fixture(scope="module")
def tune_files(ws):
    root = ws["root"]
    return {"dev": _counterfact_file(root / "tune-dev.json", slice(0, 6)),
            "eval": _counterfact_file(root / "tune-eval.json", slice(8, 12))}


def _tune(ws, files, out) -> list[str]:
    return ["tune", "--model", str(ws["model"]), "--method", "memit", "--data", str(files["dev"]), "--out", str(out),
            "--n", "4", "--batch-size", "2", "--trials", "3", "--hparams", "tiny", "--no-negative",
            "--set", f"mom2_corpus={ws['corpus']}", "--set", "mom2_n_samples=100", "--eval", str(files["eval"]),
            "--layers", "0:3", "--width", "1:2", "--steps", "5:10", "--threads", "1"]


@pytest.mark.parametrize("at,finished", [
    ("editprobe.jobs.tune.search:_TrialRunner._editor:2:after", 1),  # inside the second trial (Optuna's objective)
    ("editprobe.jobs.tune.search:select_best:2:before", 2),  # in Optuna's callback after the second trial
])
def test_tune_interrupted_writes_the_best_so_far(ws, tune_files, tmp_path, at, finished):
    out = tmp_path / "tuned.yaml"
    result = _interrupted_in_process(at, _tune(ws, tune_files, out))
    assert f"interrupted after {finished} trials: the best so far (trial " in result.stdout
    assert result.stdout.rstrip().endswith(f"in {out}")
    text = out.read_text()
    assert f"# Interrupted (Ctrl-C) after {finished} finished trials of up to 3" in text
    assert sum(line.startswith("#   ") for line in text.splitlines()) == finished  # the finished trials' lines
    assert "(interrupted)" in yaml.safe_load(text)["source"]
    edited = invoke(["edit", "--model", str(ws["model"]), "--method", "memit", "--data", str(tune_files["dev"]),
                     "--n", "2", "--batch-size", "2", "--out", str(tmp_path / "edited"), "--hparams", str(out)])
    assert edited.exit_code == 0, edited.output


def test_tune_interrupted_before_a_trial_finished_writes_nothing(ws, tune_files, tmp_path):
    out = tmp_path / "tuned.yaml"
    result = _interrupted_in_process("editprobe.jobs.tune.search:_TrialRunner._editor:1:after", _tune(ws, tune_files, out))
    assert not out.exists() and "best so far" not in result.stdout


def test_ctrl_c_while_the_program_imports_its_commands(tmp_path):
    # The console script, with SIGINT when `editprobe.cli` imports its tune command (as when
    # Ctrl-C follows Enter at once).
    script = write(tmp_path / "editprobe", "import os, signal, sys\n"
                                            "class Interrupt:\n"
                                            "    def find_spec(self, name, path=None, target=None):\n"
                                            "        if name == 'editprobe.cli.tune':\n"
                                            "            os.kill(os.getpid(), signal.SIGINT)\n"
                                            "sys.meta_path.insert(0, Interrupt())\n"
                                            "from editprobe.cli import main\n"
                                            "sys.exit(main())\n")
    done = subprocess.run([sys.executable, str(script), "models", "list"], env=subprocess_env(tmp_path),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr == INTERRUPTED + "\n", done.stderr
