"""Hyperparameter profiles: a named set of hparams YAMLs (one per method × model) plus the
run-level settings that go with them (the ``paper`` profile runs float32, as the reference
code does). A run or a study entry selects one with ``profile: NAME``.

Which file a run's hyperparameters come from (:func:`choose_hparams`), first match wins:

1. an explicit ``hparams`` (a YAML path, or a model key of the shipped files);
2. the profile's file for this method and model, when a profile is chosen;
3. the shipped default for the model (for the built-in SmolLM2 these are our tuned files).

The summary of every run records the file and why it was chosen.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import validation_message
from .hparams import HPARAMS_DIR, HParamsError, hparams_path

PROFILES_DIR = Path(__file__).parent / "profiles"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    source: str
    dtype: str | None = None  # the model dtype of runs under this profile (an explicit --dtype wins)


class HParamsChoice(BaseModel):
    """The YAML a run's hyperparameters were read from, and why that one."""

    model_config = ConfigDict(frozen=True)

    file: str  # inside the package: relative to it (editprobe/...); else as given
    sha256: str
    chosen_by: str  # "hparams" (explicit), "profile NAME", "shipped default"
    path: Path = Field(exclude=True)  # where to read it here


def available_profiles() -> list[str]:
    return sorted(p.parent.name for p in PROFILES_DIR.glob("*/profile.yaml"))


def load_profile(name: str) -> Profile:
    path = PROFILES_DIR / name / "profile.yaml"
    if not path.is_file():
        raise HParamsError(f"unknown profile {name!r}; profiles: {', '.join(available_profiles()) or 'none'}")
    try:
        return Profile.model_validate({"name": name, **(yaml.safe_load(path.read_text()) or {})})
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


def choose_hparams(method: str, model: str, hparams: str | None = None, profile: str | None = None) -> HParamsChoice:
    """The file a run of ``method`` on ``model`` reads (see the module docstring)."""
    from .keys_model import hparams_key
    from .registry import method_class

    method_class(method)  # an unknown method is named as such, before any file is looked for

    if hparams is not None:
        path = Path(hparams).expanduser()
        if not (path.suffix in (".yaml", ".yml") or path.exists()):
            path = hparams_path(method, str(hparams))  # a model key of the shipped files
            if not path.exists():
                shipped = sorted(p.stem for p in (HPARAMS_DIR / method).glob("*.yaml"))
                raise HParamsError(f"no {method} hyperparameters for model key {hparams!r}; shipped: "
                                   f"{', '.join(shipped) or 'none'}. Pass a YAML path instead.")
        return _choice(path, "hparams")
    if profile is not None:
        load_profile(profile)
        try:
            key = hparams_key(model)
        except HParamsError:
            raise HParamsError(f"profile {profile!r} has no files for model {model!r}; it covers the hub ids of "
                               f"{', '.join(profile_models(profile, method)) or 'no models'} "
                               f"(pass --hparams FILE.yaml for another model)") from None
        path = profile_path(profile, method, key)
        if not path.is_file():
            have = profile_models(profile, method)
            raise HParamsError(f"profile {profile!r} has no {method} hyperparameters for {key} "
                               f"(it has: {', '.join(have) or 'none'})")
        return _choice(path, f"profile {profile}")
    key = hparams_key(model)
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
