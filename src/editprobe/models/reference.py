"""What a model reference names, decided before anything is loaded.

- a built-in name (``smollm2-135m``);
- a local directory: a reference that starts with ``./``, ``../``, ``/`` or ``~``, or names an
  existing directory (a missing one is an error, never a hub lookup);
- anything else is a hub id: one already in the local Hugging Face cache loads offline; any
  other is looked up on the hub once, with a short timeout, so no network fails in seconds
  (transformers alone retries for about a minute) and a typo fails before any work.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import ModelReferenceError
from ..paths import read_json_object
from .builtin import BUILTIN_MODELS

HUB_TIMEOUT_S = 8.0
_LOCAL_PREFIXES = ("./", "../", "/", "~", ".\\", "..\\")


@dataclass(frozen=True)
class ModelReference:
    text: str  # what the user wrote
    kind: Literal["builtin", "local", "hub"]
    offline: bool  # load with local_files_only (built-ins, directories, cached hub ids)
    model_type: str | None = None  # from config.json when it could be read without loading


def _builtins() -> str:
    return ", ".join(BUILTIN_MODELS)


def _model_type(config_path: Path, ref: str) -> str | None:
    try:
        return read_json_object(config_path).get("model_type")
    except ValueError as exc:
        raise ModelReferenceError(f"model {ref!r}: cannot read {config_path}: {exc}") from None


def _check_adapter(ref: str, model_type: str | None) -> None:
    from .adapters import ADAPTERS, UnsupportedModelError

    if model_type is not None and model_type not in ADAPTERS:
        raise UnsupportedModelError(
            f"model {ref!r}: model_type {model_type!r} has no ModelAdapter; supported: {', '.join(sorted(ADAPTERS))}"
        )


def _local(ref: str) -> ModelReference:
    path = Path(ref).expanduser()
    if not path.exists():
        raise ModelReferenceError(f"model {ref!r}: no such directory ({path.resolve()}); give a local model "
                                  f"directory, a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or a "
                                  f"built-in: {_builtins()}")
    if not path.is_dir():
        raise ModelReferenceError(f"model {ref!r}: is a file; give the model's directory")
    config = path / "config.json"
    if not config.is_file():
        raise ModelReferenceError(f"model {ref!r}: {path} holds no config.json (not a saved Hugging Face model)")
    model_type = _model_type(config, ref)
    _check_adapter(ref, model_type)
    return ModelReference(ref, "local", offline=True, model_type=model_type)


def _hub(ref: str, network: bool) -> ModelReference:
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError
    from huggingface_hub.utils import validate_repo_id

    close = difflib.get_close_matches(ref.lower(), list(BUILTIN_MODELS), n=1, cutoff=0.8)
    if close and "/" not in ref:
        raise ModelReferenceError(f"model {ref!r}: unknown built-in; did you mean {close[0]!r}? built-ins: {_builtins()}")
    try:
        validate_repo_id(ref)
    except HFValidationError:
        raise ModelReferenceError(f"model {ref!r}: neither a built-in ({_builtins()}), a local directory (start "
                                  "it with ./ or /) nor a valid hub id (owner/name)") from None
    cached = huggingface_hub.try_to_load_from_cache(ref, "config.json")
    if isinstance(cached, str):
        model_type = _model_type(Path(cached), ref)
        _check_adapter(ref, model_type)
        return ModelReference(ref, "hub", offline=True, model_type=model_type)
    if not network:
        return ModelReference(ref, "hub", offline=False)
    if huggingface_hub.constants.is_offline_mode():
        raise ModelReferenceError(f"model {ref!r}: not in the local Hugging Face cache, and the hub is switched off "
                                  "(HF_HUB_OFFLINE is set); download it where there is network, or give a local "
                                  "directory")
    try:
        huggingface_hub.HfApi().model_info(ref, timeout=HUB_TIMEOUT_S)
    except GatedRepoError:
        raise ModelReferenceError(f"model {ref!r}: gated on the hub; accept its license on its page and log in "
                                  "(hf auth login)") from None
    except RepositoryNotFoundError:
        raise ModelReferenceError(f"model {ref!r}: no such model on the Hugging Face hub (a private one needs "
                                  f"hf auth login); built-ins: {_builtins()}; a local directory starts with ./ "
                                  "or /") from None
    except Exception as exc:  # noqa: BLE001 - any failure to reach the hub means the same to the user
        raise ModelReferenceError(f"model {ref!r}: not in the local Hugging Face cache and the hub cannot be "
                                  f"reached ({type(exc).__name__}; no network?); download it where there is "
                                  "network, or give a local directory") from None
    return ModelReference(ref, "hub", offline=False)


def resolve_model_reference(ref: str, network: bool = True) -> ModelReference:
    """Classify ``ref`` and check it as far as possible without loading weights.
    ``network=False`` skips the hub lookup of uncached hub ids."""
    if not ref or not ref.strip():
        raise ModelReferenceError("model: empty reference")
    if ref in BUILTIN_MODELS:
        return ModelReference(ref, "builtin", offline=True, model_type=None)
    if ref.startswith(_LOCAL_PREFIXES) or os.path.isdir(os.path.expanduser(ref)):
        return _local(ref)
    return _hub(ref, network)
