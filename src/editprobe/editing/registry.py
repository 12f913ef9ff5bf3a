"""Registry of editing methods and ``make_editor``."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from ..errors import validation_message
from .engine import LTEEditor
from .hparams import HParamsError, LTEHParams, available, hparams_path, load_hparams_file

METHODS: dict[str, type[LTEEditor]] = {}


def register_method(cls: type[LTEEditor]) -> type[LTEEditor]:
    METHODS[cls.name] = cls
    return cls


def _register_builtin() -> None:
    from .methods.adaedit import AdaEditEditor
    from .methods.alphaedit import AlphaEditEditor
    from .methods.emmet import EMMETEditor
    from .methods.lti import LTIEditor
    from .methods.memit import MEMITEditor
    from .methods.namet import NAMETEditor
    from .methods.pmet import PMETEditor
    from .methods.prune import PRUNEEditor
    from .methods.rect import RECTEditor
    from .methods.rome import ROMEEditor

    for cls in (ROMEEditor, MEMITEditor, EMMETEditor, AlphaEditEditor, RECTEditor, PRUNEEditor, PMETEditor,
                AdaEditEditor, NAMETEditor, LTIEditor):
        register_method(cls)


_register_builtin()


def method_class(method: str) -> type[LTEEditor]:
    try:
        return METHODS[method.lower()]
    except KeyError:
        raise HParamsError(f"unknown method {method!r}; available: {', '.join(sorted(METHODS))}") from None


def resolve_hparams(method: str, hparams: str | Path | dict | LTEHParams, overrides: dict | None = None) -> LTEHParams:
    """``hparams``: a model key with a shipped YAML (e.g. ``smollm2-135m``), a YAML path,
    a dict, or an hparams object; ``overrides`` replace single fields."""
    cls = method_class(method).hparams_cls
    overrides = dict(overrides or {})
    if isinstance(hparams, (LTEHParams, dict)):
        raw = hparams.model_dump() if isinstance(hparams, LTEHParams) else {"method": method, **hparams}
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


def make_editor(method: str, model, tokenizer, hparams, overrides: dict | None = None, **kwargs) -> LTEEditor:
    """``make_editor("memit", model, tok, "smollm2-135m")`` -> an editor that owns its state."""
    cls = method_class(method)
    return cls(model, tokenizer, resolve_hparams(method, hparams, overrides), **kwargs)
