"""The Ray backend of studies: one Ray task per unfinished run, on a local Ray cluster started
for the study or on a running one (``--address``).

A task runs its run exactly as the local backend does (:func:`execute_run`: resume from the
run directory's checkpoints, the status file, the one-line error), writing into the study
directory, which the driver and every worker must therefore see at the same path. A task
whose worker dies (SIGKILL, the OOM killer, a lost node) is retried by Ray up to
``max_retries`` times, and the retry resumes from the checkpoints the dead one left. Errors
inside a run are not retried: they are recorded, as locally. Ray is imported lazily: it is
an optional extra.

What each task asks Ray for is the study file's ``ray:`` section (:class:`RaySettings`, this
backend's settings; an entry's own ``ray:`` over the file's).
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...errors import one_line
from .ray_address import check_address, native_stderr_to
from ...runs.store import RunDir
from ..study import StudyDir, StudyError, execute_run
from .base import BACKENDS, OnRun, StudyBackend, StudyRun

RAY_MISSING = "--backend ray needs Ray: pip install 'editprobe[ray]'"
POLL_S = 1.0  # how often the driver looks for runs a worker has started


class RaySettings(BaseModel):
    """Each run's Ray task (``--backend ray``): its resources, how often Ray retries it when
    its worker dies, and its torch threads (default: its CPUs)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float = Field(1, gt=0)
    num_gpus: float = Field(0, ge=0)
    memory_gb: float | None = Field(None, gt=0)
    max_retries: int = Field(2, ge=0)
    threads: int | None = Field(None, ge=1)


def import_ray():
    try:
        import ray
    except ImportError:
        raise StudyError(RAY_MISSING) from None
    return ray


@BACKENDS.register
class RayBackend(StudyBackend):
    """Runs a study's unfinished runs as Ray tasks. Built (Ray imported, the address checked)
    before any work; ``with backend:`` connects to the cluster (or starts a local one) and
    disconnects at the end, leaving a connection the caller already had open."""

    name = "ray"
    settings = RaySettings
    label = " (Ray)"
    address_help = "the Ray cluster to run on"

    def __init__(self, address: str | None = None, threads: int | None = None) -> None:
        self.ray = import_ray()
        if address is not None:
            check_address(address)
        super().__init__(address, threads)
        self._connected = False

    def __enter__(self) -> "RayBackend":
        self._quiet = ExitStack()
        # Ray's C++ core logs to this process's stderr (a line a second while it waits for a
        # GCS): into a file for the study's length, the terminal keeps the study's own lines.
        self.log_path = Path(tempfile.gettempdir()) / f"editprobe-ray-{os.getpid()}.log"
        self._quiet.enter_context(native_stderr_to(self.log_path))
        try:
            self._connected = self._connect()
        except BaseException:
            self._close_log()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        try:
            if self._connected:
                self._connected = False
                self.ray.shutdown()
                self.ray._private.worker._worker_logs_enabled = True
        finally:
            self._close_log()

    def _close_log(self) -> None:
        self._quiet.close()
        if self.log_path.is_file() and self.log_path.stat().st_size == 0:
            self.log_path.unlink()

    # --- the cluster ----------------------------------------------------------------------------
    def _connect(self) -> bool:
        """Connects (or starts a local cluster); False when the caller was already connected."""
        ray = self.ray
        if ray.is_initialized():
            return False
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # Workers' output goes to Ray's log files: the runs report through their status files.
        kwargs: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if self.address is None:
            kwargs.update(address="local", include_dashboard=False)  # "local": never RAY_ADDRESS's cluster
        else:
            kwargs["address"] = self.address
        # A cluster we start gets Ray's token authentication; its notice (how to opt out)
        # would be the only noise of a study.
        notice = logging.getLogger("ray._private.authentication.authentication_token_setup")
        level = notice.level
        if self.address is None:
            notice.setLevel(logging.ERROR)
        try:
            ray.init(**kwargs)
            # Ray prints its raylet's notices (a dead worker) on stdout, between the study's
            # lines; the study reports a retry, or a failure's reason, itself.
            ray._private.worker._worker_logs_enabled = False
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            where = f"--address {self.address}" if self.address else "a local Ray cluster"
            hint = ""
            if self.address not in (None, "auto") and os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
                # Ray never sends a token to an explicit address unless told to.
                hint = ("; if the cluster uses Ray's token authentication, set RAY_AUTH_MODE=token and its "
                        "token (RAY_AUTH_TOKEN, or ~/.ray/auth_token)")
            raise StudyError(f"{where}: Ray cannot start or connect: {one_line(exc)}{hint}") from None
        finally:
            notice.setLevel(level)
        return True

    def _check_resources(self, runs: list[StudyRun]) -> None:
        """A task that no node can hold would wait forever: refuse it now (against the nodes
        alive at the start; an autoscaler's future nodes are not seen)."""
        nodes = [node["Resources"] for node in self.ray.nodes() if node.get("Alive")]
        for run in runs:
            need = _resources(run)
            if not any(all(node.get(k, 0) >= v for k, v in need.items()) for node in nodes):
                largest = {k: max((node.get(k, 0) for node in nodes), default=0) for k in need}
                raise StudyError(f"{run.name}: its Ray task asks for {_describe(need)} but no node of the Ray "
                                 f"cluster has that (largest: {_describe(largest)}); lower the study file's ray: "
                                 "section or add nodes")

    # --- the study ------------------------------------------------------------------------------
    def run(self, study: StudyDir, runs: list[StudyRun], on_run: OnRun | None = None) -> dict[str, str]:
        """Every unfinished run as a Ray task; returns each run's final state, like
        :func:`run_study`. A task that fails for good is recorded and never loses the others."""
        if not self.ray.is_initialized():
            raise RuntimeError("RayBackend.run needs `with backend:` (a Ray connection)")
        states = {run.name: "finished" for run in runs if study.state(run)[0] == "finished"}
        todo = [run for run in runs if run.name not in states]
        if todo:
            self._check_resources(todo)
            states.update(self._run_tasks(study, todo, on_run))
        return states

    def _run_tasks(self, study: StudyDir, todo: list[StudyRun], on_run: OnRun | None) -> dict[str, str]:
        ray = self.ray
        task = ray.remote(run_task)
        root = str(study.root.resolve())
        pending: dict[Any, StudyRun] = {}
        for run in todo:
            # Queued, not running: a worker marks it running when it starts it.
            study.set_state(run, "pending")
            settings = _ray(run)
            options: dict[str, Any] = {
                "num_cpus": settings.num_cpus, "num_gpus": settings.num_gpus, "name": run.name,
                # Retries are for a dead worker only: an error inside a run is recorded, not retried.
                "max_retries": settings.max_retries, "retry_exceptions": False}
            if settings.memory_gb is not None:
                options["memory"] = int(settings.memory_gb * 2**30)
            threads = self.threads or settings.threads or max(1, int(settings.num_cpus))
            pending[task.options(**options).remote(root, os.getcwd(), run, threads)] = run
        states: dict[str, str] = {}
        shown: dict[str, str] = {}  # run -> the running line last shown (a retry shows another)

        def show_running(run: StudyRun, note: str) -> None:
            if shown.get(run.name) != note and on_run is not None:
                on_run(run, "running", note)
            shown[run.name] = note

        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
            for run in pending.values():
                if study.state(run)[0] == "running":
                    show_running(run, study.running_note(run))
            for ref in done:
                run = pending.pop(ref)
                try:
                    states[run.name] = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    study.set_state(run, "failed", _failure(ray, exc, run))
                    states[run.name] = "failed"
                # The local backend's lines, and a retry's, even for a run too short to be seen.
                retry = _retry_note(run, study.status(run).get("attempt", 1))
                if run.name not in shown or (retry and not shown[run.name].startswith(retry)):
                    show_running(run, retry)
                if on_run is not None:
                    on_run(run, *study.state(run))
        return states


def run_task(root: str, cwd: str, run: StudyRun, threads: int) -> str:
    """One run on a Ray worker (the body of its task): the local backend's run, status and all."""
    import torch

    from ...registry import load_plugins

    if os.path.isdir(cwd):  # the driver's relative paths (datasets, --out) mean the same here
        os.chdir(cwd)
    load_plugins()  # the worker's $EDITPROBE_PLUGINS, as the command line does
    torch.set_num_threads(threads)
    study = StudyDir(root)
    if RunDir(run.config.out).finished:  # a retry of a task killed after its run finished
        study.set_state(run, "finished")
        return "finished"
    # The driver marks each task pending, so a running one found here is this task's earlier
    # attempt, whose worker died.
    previous = study.status(run)
    attempt = previous.get("attempt", 1) + 1 if previous.get("state") == "running" else 1
    return execute_run(study, run, note=_retry_note(run, attempt), attempt=attempt)


def _retry_note(run: StudyRun, attempt: int) -> str:
    if attempt == 1:
        return ""
    return f"retry {attempt - 1} of {_ray(run).max_retries} (its Ray worker died), from its checkpoints"


def _ray(run: StudyRun) -> RaySettings:
    return RayBackend.settings_of(run)


def _resources(run: StudyRun) -> dict[str, float]:
    settings = _ray(run)
    need = {"CPU": settings.num_cpus, "GPU": settings.num_gpus, "memory": (settings.memory_gb or 0) * 2**30}
    return {k: v for k, v in need.items() if v}


def _describe(resources: dict[str, float]) -> str:
    parts = [f"{v / 2**30:g} GB memory" if k == "memory" else f"{v:g} {k}" for k, v in resources.items()]
    return ", ".join(parts) or "nothing"


def _failure(ray, exc: Exception, run: StudyRun) -> str:
    """The one-line reason of a task that failed for good."""
    errors = ray.exceptions
    if isinstance(exc, errors.RayTaskError):  # never retried: e.g. editprobe missing on that node
        cause = exc.cause if exc.cause is not None else exc
        return one_line(f"its Ray task failed: {type(cause).__name__}: {_last_line(cause)}")
    if isinstance(exc, errors.OutOfMemoryError):
        what = "Ray killed its worker for lack of memory"
    elif isinstance(exc, errors.WorkerCrashedError):
        what = "its Ray worker died (killed, or out of memory)"
    elif isinstance(exc, errors.NodeDiedError):
        what = "the Ray node running it died"
    else:
        what = f"Ray: {type(exc).__name__}: {_last_line(exc)}"
    retries = _ray(run).max_retries
    kept = "; the work done is kept for --resume" if RunDir(run.config.out).has_work else ""
    return one_line(f"{what}, {retries + 1} attempt{'s' if retries else ''} (max_retries {retries}){kept}")


def _last_line(exc: BaseException) -> str:
    """Ray's messages carry tracebacks; their last line is the error."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""
