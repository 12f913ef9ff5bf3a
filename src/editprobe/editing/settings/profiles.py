"""Hyperparameter profiles: a named set of hparams YAMLs (one per method × model) plus the
run-level settings that go with them (``paper``, the paper's text, runs float32 as the
AlphaEdit code does; ``paper-code``, the paper's own code, bfloat16). A run or a study entry
selects one with ``profile: NAME``.

Which file a run's hyperparameters come from (:func:`choose_hparams`), first match wins:

1. an explicit ``hparams`` (a YAML path, a model key of the shipped files, or a settings
   folder holding one ``<method>.yaml`` per method, so one run can carry several methods'
   settings for a model editprobe ships none for);
2. the profile's file for this method and model, when a profile is chosen;
3. a file tuned for the dataset's kind (``editprobe tune``), shipped as
   ``hparams/<method>/<model key>@<kind>.yaml``, when the run's dataset is given and one exists;
4. the shipped default for the model (for the built-in SmolLM2 these are our tuned files).

The summary of every run records the file and why it was chosen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import validation_message
from ...yamlio import YAMLInputError, load_yaml
from .hparams import HPARAMS_DIR, HParamsError, hparams_path

if TYPE_CHECKING:
    from ...data.loading import ReadEntries

PROFILES_DIR = Path(__file__).parent / "profiles"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str
    dtype: str | None = None  # the model dtype of runs under this profile (an explicit --dtype wins)
    # Methods the profile deliberately has no file for, each with what to run instead (e.g.
    # paper-code: the paper's code has no ROME; its "rome" is EMMET at batch size 1).
    not_covered: dict[str, str] = {}


class HParamsChoice(BaseModel):
    """The YAML a run's hyperparameters were read from, and why that one."""

    model_config = ConfigDict(frozen=True)

    file: str  # inside the package: relative to it (editprobe/...); else as given
    sha256: str
    chosen_by: str  # "hparams" (explicit), "profile NAME", "tuned for KIND", "shipped default"
    path: Path = Field(exclude=True)  # where to read it here


def available_profiles() -> list[str]:
    return sorted(p.parent.name for p in PROFILES_DIR.glob("*/profile.yaml"))


def load_profile(name: str) -> Profile:
    path = PROFILES_DIR / name / "profile.yaml"
    if not path.is_file():
        raise HParamsError(f"unknown profile {name!r}; profiles: {', '.join(available_profiles()) or 'none'}")
    try:
        return Profile.model_validate({"name": name, **(load_yaml(path) or {})})
    except YAMLInputError as exc:
        raise HParamsError(f"{path}: {exc}") from None
    except yaml.YAMLError as exc:
        raise HParamsError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        where, message = validation_message(exc)
        raise HParamsError(f"{path}: field {where!r}: {message}") from None


def with_profile_settings(data):
    """A job config's raw fields with its profile's run settings filling those left unset
    (an explicit dtype wins); used as a pydantic before-validator."""
    if isinstance(data, dict) and data.get("profile") is not None and data.get("dtype") is None:
        try:
            profile = load_profile(str(data["profile"]))
        except HParamsError:
            return data  # the profile field's own check names it
        if profile.dtype is not None:
            data = {**data, "dtype": profile.dtype}
    return data


def profile_path(profile: str, method: str, model_key: str) -> Path:
    return PROFILES_DIR / profile / method / f"{model_key}.yaml"


def profile_models(profile: str, method: str) -> list[str]:
    return sorted(p.stem for p in (PROFILES_DIR / profile / method).glob("*.yaml"))


def _display(path: Path) -> str:
    resolved = path.resolve()
    if resolved.is_relative_to(PACKAGE_ROOT):
        return str(Path(PACKAGE_ROOT.name) / resolved.relative_to(PACKAGE_ROOT))
    return str(path)


def _choice(path: Path, chosen_by: str) -> HParamsChoice:
    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as exc:
        raise HParamsError(f"{path}: cannot read hyperparameters: {exc.strerror or exc}") from None
    return HParamsChoice(file=_display(path), sha256=digest, chosen_by=chosen_by, path=path)


_KIND_SAMPLE = 20  # records read to decide


def dataset_kind(data: str, read: ReadEntries | None = None) -> str | None:
    """The kind its format declares (``counterfact``, ``zsre``, ``mquake``, ``wcf``; a plugin
    format's own) for a dataset file or built-in name, ``zsre`` when every record is a
    question (KnowEdit's zsRE, EasyEdit's); None when it cannot be read (the dataset check
    names why). ``read``: how the file is parsed (a plan shares one parse with its
    records, data/loading.py ``parse_once``)."""
    from ...data import load_records
    from ...data.formats import format_kind
    from ...errors import UserError

    try:
        loaded = load_records(data, limit=_KIND_SAMPLE, read=read)
    except (UserError, OSError, ValueError):
        return None
    if loaded.records and all(r.is_question for r in loaded.records):
        return "zsre"
    return format_kind(loaded.format)


def tuned_path(method: str, model_key: str, kind: str) -> Path:
    return hparams_path(method, f"{model_key}@{kind}")


def choose_hparams(method: str, model: str, hparams: str | None = None, profile: str | None = None,
                   dataset: str | None = None, kind: str | None = None) -> HParamsChoice:
    """The file a run of ``method`` on ``model`` reads (see the module docstring). The
    dataset's ``kind`` (:func:`dataset_kind`) picks a tuned file: given by a caller that read
    the dataset already (runs/plan.py), else read from ``dataset`` when given."""
    from .model_keys import hparams_key
    from ..registry import method_class

    method_class(method)  # an unknown method is named as such, before any file is looked for

    if hparams is not None:
        path = Path(hparams).expanduser()
        if path.is_dir():
            path = path / f"{method}.yaml"
            if not path.is_file():
                raise HParamsError(f"settings folder {hparams}: no {method}.yaml in it (a folder given as hparams "
                                   "holds one <method>.yaml per method of the run)")
        elif not (path.suffix in (".yaml", ".yml") or path.exists()):
            path = hparams_path(method, str(hparams))  # a model key of the shipped files
            if not path.exists():
                shipped = sorted(p.stem for p in (HPARAMS_DIR / method).glob("*.yaml"))
                raise HParamsError(f"no {method} hyperparameters for model key {hparams!r}; shipped: "
                                   f"{', '.join(shipped) or 'none'}. Pass a YAML path instead.")
        return _choice(path, "hparams")
    if profile is not None:
        chosen = load_profile(profile)  # an unknown profile is named before the model is looked at
        try:
            key = hparams_key(model)
        except HParamsError:
            raise HParamsError(f"profile {profile!r} has no files for model {model!r}; it covers the hub ids of "
                               f"{', '.join(profile_models(profile, method)) or 'no models'} "
                               f"(pass --hparams FILE.yaml for another model)") from None
        path = profile_path(profile, method, key)
        if not path.is_file() and method in chosen.not_covered:
            raise HParamsError(f"profile {profile!r} has no {method} hyperparameters: {chosen.not_covered[method]}")
        if not path.is_file():
            have = profile_models(profile, method)
            raise HParamsError(f"profile {profile!r} has no {method} hyperparameters for {key} "
                               f"(it has: {', '.join(have) or 'none'})")
        return _choice(path, f"profile {profile}")
    key = hparams_key(model)
    if kind is None and dataset is not None:
        kind = dataset_kind(dataset)
    if kind is not None and tuned_path(method, key, kind).is_file():
        return _choice(tuned_path(method, key, kind), f"tuned for {kind}")
    path = hparams_path(method, key)
    if not path.is_file():
        raise HParamsError(f"no shipped {method} hyperparameters for {key}; pass --hparams FILE.yaml")
    return _choice(path, "shipped default")


def check_profile_name(name: str | None) -> str | None:
    """A job config's ``profile`` field check (one line listing the profiles)."""
    if name is not None:
        try:
            load_profile(name)
        except HParamsError as exc:
            raise ValueError(str(exc)) from None
    return name
