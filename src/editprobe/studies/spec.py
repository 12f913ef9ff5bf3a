"""A study file: a grid of runs in one YAML file, validated and expanded into runs, each
exactly today's ``run`` unit in its own directory (studies/study.py runs them).

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
backends are in :data:`~editprobe.studies.backends.base.BACKENDS`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from ..errors import UserError, clip, one_line, validation_message
from ..yamlio import load_yaml
from ..runs.config import RunConfig, dataset_keys
from ..runs.overrides_key import study_overrides_keys
from .backends.base import StudyRun, check_section_types, settings_models, split_sections, validate_sections

STUDY_FILE = "study.yaml"


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
        >>> from editprobe.studies.spec import load_study
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
