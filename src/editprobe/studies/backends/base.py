"""Study backends: how the runs of a study are run — one after another on this machine
(``local``, studies/backends/local.py), one Ray task each (``ray``, studies/backends/ray.py), or a
plug-in's.

A backend is a :class:`StudyBackend` subclass registered in :data:`BACKENDS` under its
``name``, which ``editprobe study --backend NAME`` takes (the built-in ones register when
``editprobe.runs`` is imported). A backend may own a section of the
study file, under its name (Ray's ``ray:``), whose schema is its ``settings`` model (pydantic,
unknown keys forbidden); an entry of the study may override the file's section with its own.
Every registered backend's section is validated when a study file is read, whichever backend
then runs it: a study file is valid or not on its own, and a bad key fails before any work.

A plug-in backend registers like any plug-in (``EDITPROBE_PLUGINS``, registry.py)::

    @BACKENDS.register
    class MyBackend(StudyBackend):
        name = "mine"
        def run(self, study, runs, on_run=None): ...
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, Field, ValidationError

from ...registry import Registry
from ...runs.config import RunConfig


class StudyRun(BaseModel):
    """One run of a study: its directory name, its run config and each backend's settings
    for it (its entry's section over the study file's, validated), by backend name."""

    name: str
    config: RunConfig
    backend_settings: dict[str, BaseModel] = Field(default_factory=dict)


# on_run(run, state, note): a run started ("running", with a retry's note) or ended.
OnRun = Callable[[StudyRun, str, str], None]


class StudyRecords(Protocol):
    """What a backend reads and records of the study it runs (a StudyDir): the directory
    every run writes into, and each run's state and status file."""

    root: Path

    def state(self, run: StudyRun) -> tuple[str, str]: ...

    def status(self, run: StudyRun) -> dict[str, Any]: ...

    def set_state(self, run: StudyRun, state: str, error: str = "", attempt: int | None = None,
                  resumable: bool | None = None) -> None: ...


class StudyBackend(ABC):
    """A way to run a study's runs. Built before any work (the constructor checks what it
    can: Ray installed, its address answering), then used as ``with backend:`` around the
    study (Ray: connect to a cluster, or start one, and leave it at the end).

    A subclass sets ``name`` and implements :meth:`run`; it sets ``settings`` when it owns a
    section of the study file, ``label`` for the study's first line and ``address_help``
    when it takes ``--address``."""

    name: ClassVar[str]
    settings: ClassVar[type[BaseModel] | None] = None  # its study-file section's schema, under its name
    label: ClassVar[str] = ""  # after the run count of "study DIR: N runs" (Ray: " (Ray)")
    address_help: ClassVar[str | None] = None  # what --address names to it; None: it takes none

    def __init__(self, address: str | None = None, threads: int | None = None) -> None:
        self.address = address
        self.threads = threads  # torch CPU threads of each run (None: torch's default)

    def __enter__(self) -> StudyBackend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    @abstractmethod
    def run(self, study: StudyRecords, runs: list[StudyRun], on_run: OnRun | None = None) -> dict[str, str]:
        """Run every unfinished run (a run resumes from its checkpoints), recording each one's
        state in ``study``; a failed run is recorded and never stops the others. Returns each
        run's final state, "finished" or "failed"."""

    @classmethod
    def settings_of(cls, run: StudyRun) -> Any:
        """This backend's settings for ``run`` (its ``settings`` model)."""
        return run.backend_settings[cls.name]


BACKENDS: Registry[type[StudyBackend]] = Registry("study backend", key=lambda cls: cls.name, base=StudyBackend,
                                                 required=("name",))


# --- the backends' sections of a study file ------------------------------------------------------
def settings_models() -> dict[str, type[BaseModel]]:
    """The study-file section of every registered backend that owns one, by its name."""
    return {name: cls.settings for name, cls in BACKENDS.items() if cls.settings is not None}


def split_sections(data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A study file's (or entry's) raw mapping as (the backends' sections, the rest)."""
    names = settings_models()
    return ({k: v for k, v in data.items() if k in names}, {k: v for k, v in data.items() if k not in names})


def validate_sections(sections: dict[str, Any], title: str) -> dict[str, BaseModel]:
    """Each backend's section of a study file validated by its model (an absent one: the
    model's defaults); a bad one raises the ValidationError, located under its name."""
    out: dict[str, BaseModel] = {}
    for name, model in settings_models().items():
        try:
            out[name] = model.model_validate(sections.get(name, {}))
        except ValidationError as exc:
            errors = [{**error, "loc": (name, *error["loc"])} for error in exc.errors()]
            raise ValidationError.from_exception_data(title, errors) from None  # type: ignore[arg-type]
    return out


def check_section_types(sections: dict[str, Any], title: str) -> None:
    """An entry's sections must be mappings (they are merged over the file's)."""
    for name, value in sections.items():
        if not isinstance(value, dict):
            raise ValidationError.from_exception_data(title, [{"type": "dict_type", "loc": (name,), "input": value}])
