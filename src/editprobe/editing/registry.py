"""``make_editor`` and hyperparameter resolution over the registered methods (plugins.py)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from ..errors import validation_message
from .api import Editor
from .lte.engine import LTEEditor
from .plugins import METHODS, register_method
from .lte import methods  # noqa: F401  (register the built-in methods)
from .finetune import ft  # noqa: F401
from .incontext import ike  # noqa: F401
from . import rledit  # noqa: F401
from .memory import grace, wise  # noqa: F401
from . import external  # noqa: F401  (evaluate: an edit made elsewhere)
from .settings.hparams import HParamsError, available, hparams_path, load_hparams_file

__all__ = ["METHODS", "PRESERVE_PREVIOUS", "lte_methods", "make_editor", "method_class", "overrides_for",
           "register_method", "resolve_hparams"]

# The K_p switch of a run, an edit or a study (--preserve-previous): a setting of the methods
# whose settings declare it (the LTE methods); FT, IKE and RLEdit keep no earlier keys and
# are built without it.
PRESERVE_PREVIOUS = "preserve_previous"


def method_class(method: str) -> type[Editor]:
    return METHODS[method.lower()]


def lte_methods() -> list[str]:
    """The locate-then-edit methods: those built on the LTE engine (``LTEEditor``), not FT,
    IKE, RLEdit or a plug-in editor of another family."""
    return [name for name in METHODS if issubclass(METHODS[name], LTEEditor)]


def overrides_for(method: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` as ``method`` takes them: the K_p switch only where its settings declare it."""
    if PRESERVE_PREVIOUS in method_class(method).hparams_cls.model_fields:
        return dict(overrides)
    return {k: v for k, v in overrides.items() if k != PRESERVE_PREVIOUS}


def resolve_hparams(method: str, hparams: str | Path | dict | BaseModel, overrides: dict | None = None) -> BaseModel:
    """``hparams``: a model key with a shipped YAML (e.g. ``smollm2-135m``), a YAML path,
    a dict, or an hparams object; ``overrides`` replace single fields."""
    cls = method_class(method).hparams_cls
    overrides = dict(overrides or {})
    if isinstance(hparams, (BaseModel, dict)):  # an hparams object of any method, or a dict
        raw = hparams.model_dump() if isinstance(hparams, BaseModel) else {"method": method, **hparams}
        try:
            return cls.model_validate({**raw, **overrides})
        except ValidationError as exc:
            field, message = validation_message(exc)
            raise HParamsError(f"{method} hyperparameters: field {field!r}: {message}") from None
    path = Path(hparams)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return load_hparams_file(path, cls, overrides)
    shipped = hparams_path(method, str(hparams))
    if not shipped.exists():
        raise HParamsError(
            f"no {method} hyperparameters for model key {hparams!r}; shipped: {', '.join(available(method)) or 'none'}. "
            "Pass a YAML path instead."
        )
    return load_hparams_file(shipped, cls, overrides)


def make_editor(method: str, model, tokenizer, hparams, overrides: dict | None = None, **kwargs) -> Editor:
    """``make_editor("memit", model, tok, "smollm2-135m")`` -> an editor that owns its state."""
    cls = method_class(method)
    return cls(model, tokenizer, resolve_hparams(method, hparams, overrides), **kwargs)
