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
    """The registered editor class of ``method`` (case-insensitive); an ``UnknownNameError``
    naming the known methods when there is none."""
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
    """The validated settings of ``method`` (an instance of its ``hparams_cls``).

    Args:
        method: A registered method name (``memit``, ``rome``, ``ft``, ...; case-insensitive).
        hparams: A model key with a shipped YAML (``smollm2-135m``, ``llama3-8b-instruct``,
            ``tiny``, ...: the files under ``editing/settings/hparams/<method>/``), a YAML
            path, a dict of fields, or an hparams object (of this method or another: its
            fields are validated again as this method's).
        overrides: Single fields that replace those of ``hparams`` (what ``--set`` passes).

    Returns:
        The settings, validated (pydantic, unknown fields refused).

    Raises:
        UnknownNameError: ``method`` is not registered (a KeyError naming the known ones).
        HParamsError: No shipped file for that model key, or a field is missing, unknown
            or of the wrong type (one line naming the field).

    Examples:
        >>> from editprobe.editing import resolve_hparams
        >>> hp = resolve_hparams("memit", "tiny", {"layers": [1]})
        >>> type(hp).__name__, hp.layers
        ('MEMITHParams', [1])
        >>> resolve_hparams("memit", "no-such-model")
        Traceback (most recent call last):
        ...
        editprobe.editing.settings.hparams.HParamsError: no memit hyperparameters for model key 'no-such-model'; ...
    """
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
    """An editor of ``method`` for ``model``, holding its own state (the edits, C0, caches).

    Nothing is edited yet: ``apply`` edits in place and ``restore`` undoes it (the
    :class:`~editprobe.editing.api.Editor` contract).

    Args:
        method: A registered method name (``METHODS``: the ten LTE methods, ``ft``,
            ``ike``, ``rledit``, ``grace``, ``wise``, ``external`` and any plug-in).
        model: The ``transformers`` causal LM to edit (as :func:`~editprobe.models.load_model`
            returns it).
        tokenizer: Its tokenizer.
        hparams: The settings, as :func:`resolve_hparams` takes them: a shipped model key,
            a YAML path, a dict or an hparams object.
        overrides: Single settings fields that replace those of ``hparams``.
        **kwargs: Passed to the editor's constructor. The LTE methods take ``stats`` (a
            ``CovarianceStore``: where C0 is cached), ``corpus`` (the C0 corpus instead of
            the settings' ``mom2_corpus``), ``model_id`` (the name C0 is cached under) and
            ``target_cache``.

    Returns:
        The editor (an instance of the method's registered class).

    Raises:
        UnknownNameError: ``method`` is not registered (a KeyError naming the known ones).
        HParamsError: The settings do not validate, or name layers the model lacks.

    Examples:
        MEMIT on a tiny random Llama, its C0 from a small corpus cached in ``stats/``:

        >>> from editprobe.editing import make_editor
        >>> from editprobe.editing.lte.covariance import CovarianceStore
        >>> from editprobe.models.tiny import tiny_corpus, tiny_model
        >>> model, tokenizer, adapter = tiny_model("llama")
        >>> editor = make_editor("memit", model, tokenizer, "tiny", {"layers": [1, 2]},
        ...                      stats=CovarianceStore(root="stats", progress=False),
        ...                      corpus=tiny_corpus())
        >>> editor.name, editor.hp.layers
        ('memit', [1, 2])

        The built-in model with its shipped settings (not run here: it downloads the model
        and reads a corpus for C0):

        ```python
        model, tokenizer, adapter = load_model("smollm2-135m")
        editor = make_editor("memit", model, tokenizer, "smollm2-135m")
        ```
    """
    cls = method_class(method)
    return cls(model, tokenizer, resolve_hparams(method, hparams, overrides), **kwargs)
