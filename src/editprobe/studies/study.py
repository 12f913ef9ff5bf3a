"""Studies: a grid of runs from one file, run one after another (the local backend, here) or
one Ray task each (studies/backends/ray.py), each exactly today's ``run`` unit in its own directory,
resumable, with a status per run.

A study file (YAML)::

    defaults:                 # fields of every run (any RunConfig field)
      n: 20
      batch_size: 10
    runs:
      - models: [smollm2-135m]            # or model: NAME
        methods: [memit, alphaedit]
        datasets: [counterfact-sample]
        preserve_previous: [true, false]  # one run per value (Table 6)
        seeds: [0]                        # one run per seed
        set: {mom2_n_samples: 1000}       # hparams overrides (as --set; old name: overrides)
        ray: {num_gpus: 1}                # this entry's Ray resources (over the top-level ray:)
    ray: {num_cpus: 1, max_retries: 2}    # --backend ray: each run's task (study_ray.RaySettings)

expands into one run per (entry, model, preserve_previous, seed). A section named by a study
backend (``ray:``) is that backend's settings, validated by it (studies/backends/base.py); the
backends are in :data:`~editprobe.studies.backends.base.BACKENDS`. The study directory keeps
a copy of the file (``study.yaml``), the runs under ``runs/<name>/`` and one status file per
run under ``status/``; a failed run is recorded with its one-line error and never stops the
others.
"""

from __future__ import annotations

import functools
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..errors import UserError, clip, one_line, validation_message
from ..paths import read_json_object, write_json_atomic, write_text_atomic
from ..workdir import ForeignDirectoryError, WorkDir
from ..yamlio import load_yaml
from ..runs.config import RunConfig, dataset_keys
from ..runs.overrides_key import study_overrides_keys
from ..runs.store import RunDir, RunFailedError
from .backends.base import StudyRun, check_section_types, settings_models, split_sections, validate_sections

STUDY_FILE = "study.yaml"
State = Literal["pending", "running", "finished", "failed"]
# What --status shows besides: a run whose status says running but whose directory no
# process holds (its process died; --resume continues it from its checkpoints).
INTERRUPTED = "interrupted"


class StudyError(UserError, ValueError):
    pass


class StudyEntry(BaseModel):
    """One line of a study; fields not listed here are RunConfig fields of its runs, but for
    the sections named by a study backend (``ray:``), which override the file's."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    models: list[str] = Field(default_factory=list)
    model: str | None = None
    methods: list[str] | None = None
    datasets: list[str] | None = None
    preserve_previous: list[bool | None] = Field(default_factory=lambda: [None])
    seeds: list[int] = Field(default_factory=lambda: [0])
    overrides: dict[str, Any] = Field(default_factory=dict, alias="set")
    # One run per method and/or per dataset instead of one run of them all (parallel on a
    # cluster; each run measures its own no-edit baseline).
    split: list[Literal["methods", "datasets"]] = Field(default_factory=list)
    _sections: dict[str, dict[str, Any]] = PrivateAttr(default_factory=dict)  # the backends' (backend_sections)

    @model_validator(mode="wrap")
    @classmethod
    def _backend_sections(cls, data: Any, handler) -> "StudyEntry":
        if not isinstance(data, dict):
            return handler(data)
        sections, rest = split_sections(data)
        check_section_types(sections, cls.__name__)
        entry = handler(rest)
        entry._sections = sections
        return entry

    @property
    def backend_sections(self) -> dict[str, dict[str, Any]]:
        """This entry's sections named by a backend, as written (validated in expand)."""
        return self._sections

    def model_names(self) -> list[str]:
        return self.models or ([self.model] if self.model else [])


class Study(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: dict[str, Any] = Field(default_factory=dict)
    runs: list[StudyEntry]
    _settings: dict[str, BaseModel] = PrivateAttr(default_factory=dict)  # the backends' (backend_settings)

    @model_validator(mode="wrap")
    @classmethod
    def _backend_sections(cls, data: Any, handler) -> "Study":
        if not isinstance(data, dict):
            return handler(data)
        sections, rest = split_sections(data)
        study = handler(rest)
        study._settings = validate_sections(sections, cls.__name__)
        return study

    @property
    def backend_settings(self) -> dict[str, BaseModel]:
        """Each backend's section of the file (``ray:``), validated; defaults where absent."""
        return self._settings


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "x"


def load_study(path: str | Path) -> Study:
    """Read and validate a study file (YAML: ``defaults`` and a list of ``runs``).

    Args:
        path: The study file.

    Returns:
        The study; :func:`expand` gives its runs.

    Raises:
        StudyError: The file cannot be read, is not a mapping, or a field is bad (one line
            naming the field).

    Examples:
        >>> from pathlib import Path
        >>> from editprobe.studies.study import load_study
        >>> _ = Path("study.yaml").write_text(
        ...     "{defaults: {n: 10}, runs: [{methods: [memit, alphaedit]}]}")
        >>> study = load_study("study.yaml")
        >>> len(study.runs), study.defaults
        (1, {'n': 10})
    """
    path = Path(path)
    try:
        raw = load_yaml(path)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise StudyError(f"cannot read study file {path}: {reason}") from None
    if not isinstance(raw, dict):
        sections = "".join(f", '{name}'" for name in settings_models())
        raise StudyError(f"{path}: a study file must be a mapping with 'runs' (and optional 'defaults'{sections})")
    try:
        return Study.model_validate(study_overrides_keys(raw, str(path), StudyError))
    except ValidationError as exc:
        where, message = validation_message(exc)
        raise StudyError(f"{path}: field {where!r}: {message}") from None


def _grid(entry: StudyEntry, defaults: dict[str, Any], models: list[str]):
    """(model, preserve_previous, seed, methods, datasets) of every run of an entry; methods
    or datasets None: the defaults' (or RunConfig's)."""
    def groups(key: str) -> list[list[str] | None]:
        values = getattr(entry, key) if getattr(entry, key) is not None else defaults.get(key)
        if key not in entry.split:
            return [values]
        values = values if values is not None else list(RunConfig.model_fields[key].default)
        return [[v] for v in values]

    for model in models:
        for preserve in entry.preserve_previous:
            for seed in entry.seeds:
                for methods in groups("methods"):
                    for datasets in groups("datasets"):
                        yield model, preserve, seed, methods, datasets


def _entry_settings(study: Study, entry: StudyEntry, i: int, source: str) -> dict[str, BaseModel]:
    """Each backend's settings for the runs of entry ``i``: its section over the file's."""
    out: dict[str, BaseModel] = {}
    for name, model in settings_models().items():
        base = study.backend_settings[name].model_dump() if name in study.backend_settings else {}
        try:
            out[name] = model.model_validate({**base, **entry.backend_sections.get(name, {})})
        except ValidationError as exc:
            where, message = validation_message(exc)
            raise StudyError(f"{source}: runs[{i}].{name}: field {where!r}: {message}") from None
    return out


def expand(study: Study, out: Path, source: str = STUDY_FILE) -> list[StudyRun]:
    """Every run of the study, validated (a bad field fails the study before any work)."""
    built: list[tuple[int, str, bool | None, int, RunConfig, dict[str, BaseModel]]] = []
    for i, entry in enumerate(study.runs):
        settings = _entry_settings(study, entry, i, source)
        models = entry.model_names() or [study.defaults.get("model", RunConfig.model_fields["model"].default)]
        for model, preserve, seed, methods, datasets in _grid(entry, study.defaults, models):
            fields = {**study.defaults, **(entry.model_extra or {}), "model": model, "seed": seed}
            for key, value in (("methods", methods), ("datasets", datasets)):
                if value is not None:
                    fields[key] = value
            if preserve is not None:
                fields["preserve_previous"] = preserve
            fields["overrides"] = {**study.defaults.get("overrides", {}), **entry.overrides}
            fields["out"] = out / "runs"
            try:
                config = RunConfig.build(fields)
            except UserError as exc:
                raise StudyError(f"{source}: runs[{i}] (model {clip(str(model))}): {exc}") from None
            built.append((i, model, preserve, seed, config, settings))
    # Dataset keys across the whole study: two files with one stem in different folders are
    # told apart in every run's name, so no two runs share a directory.
    keys = dataset_keys(sorted({d for *_, config, _ in built for d in config.datasets}))
    runs: list[StudyRun] = []
    for i, model, preserve, seed, config, settings in built:
        kp = "" if preserve is None else ("__kp" if preserve else "__nokp")
        name = (f"{i:02d}__{_slug(Path(model).name)}__{_slug('+'.join(config.methods))}"
                f"__{_slug('+'.join(keys[d] for d in config.datasets))}{kp}__seed{seed}")
        runs.append(StudyRun(name=name, config=config.model_copy(update={"out": out / "runs" / name}),
                             backend_settings=settings))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise StudyError(f"{source}: two runs expand to the same name; give them different settings")
    if not runs:
        raise StudyError(f"{source}: no runs")
    return runs


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
        last = self.progress(run)
        if RunDir(run.config.out).holder() is None:
            return INTERRUPTED, ("its process ended without finishing it; --resume continues it from its checkpoints"
                                 + (f" (its last line: {last})" if last else ""))
        return state, "; ".join(part for part in (error, last) if part)

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

