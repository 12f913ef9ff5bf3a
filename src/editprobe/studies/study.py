"""Studies: a grid of runs from one file (studies/spec.py), run one after another (the local
backend, here) or one Ray task each (studies/backends/ray.py), each exactly today's ``run`` unit
in its own directory, resumable, with a status per run.

The study directory keeps a copy of the file (``study.yaml``), the runs under
``runs/<name>/`` and one status file per run under ``status/``; a failed run is recorded with
its one-line error and never stops the others. The study file's names (``Study``,
``load_study``, ``expand``, ...) are importable from here too.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from ..errors import UserError, one_line
from ..paths import read_json_object, write_json_atomic, write_text_atomic
from ..workdir import ForeignDirectoryError, WorkDir
from ..runs.store import RunDir, RunFailedError
from .backends.base import StudyRun
from .spec import STUDY_FILE, Study, StudyEntry, StudyError, expand, load_study

__all__ = ["INTERRUPTED", "STUDY_FILE", "Study", "StudyDir", "StudyEntry", "StudyError", "StudyRun", "execute_run",
           "expand", "is_study_dir", "load_study", "run_study"]

State = Literal["pending", "running", "finished", "failed"]
# What --status shows besides: a run whose status says running but whose directory no
# process holds (its process died; --resume continues it from its checkpoints).
INTERRUPTED = "interrupted"


class StudyDir:
    """A study's directory: the copied study file, the runs, a status file per run. An
    editprobe ``study`` directory (workdir.py): the process running the study holds
    ``work``'s lock."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.work = WorkDir(self.root, "study")

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def exists(self) -> bool:
        return self.study_file.is_file()

    def runs(self) -> list[StudyRun]:
        return expand(load_study(self.study_file), self.root, str(self.study_file))

    def create(self, study_path: Path) -> list[StudyRun]:
        """Start a study here from ``study_path`` (or find it already here); refuses a
        directory holding anything else. Call it holding ``work``'s lock."""
        runs = expand(load_study(study_path), self.root, str(study_path))
        self.check_location()
        if self.exists:
            if self.study_file.read_text() != Path(study_path).read_text():
                raise StudyError(f"{self.root} holds another study; choose a new --out or resume it with "
                                 f"editprobe study {self.root} --resume")
            return runs
        write_text_atomic(self.study_file, Path(study_path).read_text())
        return runs

    def check_location(self) -> None:
        """Refuse, before any work, a --out that is not a study directory of editprobe's."""
        try:
            self.work.check()
        except ForeignDirectoryError as exc:
            raise StudyError(str(exc)) from None

    # --- status ----------------------------------------------------------------------------------
    def _status_path(self, name: str) -> Path:
        return self.root / "status" / f"{name}.json"

    def status(self, run: StudyRun) -> dict[str, Any]:
        """The run's status file as written ({} when there is none, or it is unreadable)."""
        path = self._status_path(run.name)
        try:
            return read_json_object(path) if path.is_file() else {}
        except ValueError:
            return {}

    def state(self, run: StudyRun) -> tuple[State, str]:
        if RunDir(run.config.out).finished:
            return "finished", ""
        status = self.status(run)
        return status.get("state", "pending"), status.get("error", "")

    def set_state(self, run: StudyRun, state: State, error: str = "", attempt: int | None = None,
                  resumable: bool | None = None) -> None:
        """``error``: the one line after the state (a failure's error; a retry's note while
        running); ``attempt``: which attempt of a Ray task is running; ``resumable``: whether
        running a failed run again can pass (False: its settings or data caused the failure)."""
        status: dict[str, Any] = {"state": state, "error": error}
        if attempt is not None:
            status["attempt"] = attempt
        if resumable is not None:
            status["resumable"] = resumable
        write_json_atomic(self._status_path(run.name), status)

    def set_progress(self, run: StudyRun, line: str) -> None:
        """The running run's latest stage or progress line (``--status`` and the Ray driver show
        it; the next state clears it)."""
        status = self.status(run)
        if status.get("state") == "running":
            write_json_atomic(self._status_path(run.name), status | {"progress": line})

    def progress(self, run: StudyRun) -> str:
        """The latest line :meth:`set_progress` recorded ("" when none)."""
        return str(self.status(run).get("progress", ""))

    def running_note(self, run: StudyRun) -> str:
        """What follows ``running``: a retry's note, then the run's latest stage or progress line."""
        _, note = self.state(run)
        return "; ".join(part for part in (note, self.progress(run)) if part)

    def can_retry(self, names: list[str]) -> bool:
        """Whether ``--resume`` may finish any of these failed runs (a failure recorded before
        this was known counts as one it may)."""
        runs = {run.name: run for run in self.runs()}
        return any(self.status(runs[name]).get("resumable", True) for name in names if name in runs)

    def shown_state(self, run: StudyRun) -> tuple[str, str]:
        """The state --status shows: a run recorded as running whose directory no process
        holds was interrupted (its process died without recording how it ended)."""
        state, error = self.state(run)
        if state != "running":
            return state, error
        if RunDir(run.config.out).holder() is None:
            last = self.progress(run)
            return INTERRUPTED, ("its process ended without finishing it; --resume continues it from its checkpoints"
                                 + (f" (its last line: {last})" if last else ""))
        return state, self.running_note(run)

    def status_lines(self) -> list[str]:
        lines = []
        for run in self.runs():
            state, error = self.shown_state(run)
            lines.append(f"{run.name}: {state}" + (f": {error}" if error else ""))
        return lines

    def finished_dirs(self) -> list[Path]:
        return [r.config.out for r in self.runs() if RunDir(r.config.out).finished]


def execute_run(study: StudyDir, run: StudyRun, loaded=None, on_start: Callable[[], None] | None = None,
                note: str = "", attempt: int | None = None) -> str:
    """Run one run of the study here, from its checkpoints when it has any, and record how it
    ended: "finished" or "failed" (with its one-line error). Both backends run a run with this
    (the Ray backend on a worker, with the ``attempt`` and ``note`` of a retry)."""
    from ..runs.advice import resumable
    from ..runs.loop import Experiment
    from ..runs.plan import RunPlan

    study.set_state(run, "running", note, attempt)
    if on_start is not None:
        on_start()
    try:
        plan = RunPlan.build(run.config, loaded=loaded)  # the run's checks, each file read once
        Experiment(plan, loaded=loaded, on_line=functools.partial(study.set_progress, run)).run(
            resume=RunDir(run.config.out).has_config)  # progress: bars or lines, the latest in the status
        study.set_state(run, "finished", attempt=attempt)
        return "finished"
    except UserError as exc:
        cause = exc.__cause__ if isinstance(exc, RunFailedError) and exc.__cause__ is not None else exc
        study.set_state(run, "failed", one_line(exc), attempt, resumable=resumable(cause))
    except Exception as exc:  # noqa: BLE001 - one failed run never loses the others
        # A bug: a fixed editprobe may pass it, so --resume stays advertised.
        study.set_state(run, "failed", f"internal error: {type(exc).__name__}: {one_line(exc)}", attempt,
                        resumable=True)
        (study.root / "status" / f"{run.name}.traceback.txt").write_text(traceback.format_exc())
    return "failed"


def run_study(study: StudyDir, runs: list[StudyRun], on_run: Callable[[StudyRun, str, str], None] | None = None,
              loaded=None) -> dict[str, str]:
    """Run every unfinished run, one after another (the local backend); an unfinished one
    resumes from its checkpoints. A failure is recorded and the next run starts.

    Args:
        study: The study's directory.
        runs: The runs (:func:`expand` of the loaded study).
        on_run: Called as ``on_run(run, state, message)`` when a run starts and when it ends.
        loaded: A model already loaded, shared by the runs of that model.

    Returns:
        Each run's final state by name (``finished``, ``failed``, ...).

    Examples:
        Not run here (``editprobe study FILE --out DIR`` does this and more: the lock,
        the copied study file, the Ray backend):

        ```python
        from pathlib import Path
        from editprobe.studies.study import StudyDir, expand, load_study, run_study
        runs = expand(load_study("studies/smollm2.yaml"), Path("studies-out/smollm2"))
        states = run_study(StudyDir("studies-out/smollm2"), runs)
        ```
    """
    states: dict[str, str] = {}
    for run in runs:
        state, _ = study.state(run)
        if state == "finished":
            states[run.name] = "finished"
            continue
        started = functools.partial(on_run, run, "running", "") if on_run is not None else None
        states[run.name] = execute_run(study, run, loaded=loaded, on_start=started)
        if on_run is not None:
            on_run(run, *study.state(run))
    return states


def is_study_dir(path: str | Path) -> bool:
    return (Path(path) / STUDY_FILE).is_file()

