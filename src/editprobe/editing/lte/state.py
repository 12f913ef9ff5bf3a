"""The files of a saved editor state, and the checks a state passes before it is loaded.

An LTE editor's state (``LTEEditor.save_state``) is a directory of ``state.json`` (method,
model id and type, hyperparameters, counts, templates, the method's metadata, the layout of
the preserved keys, the C0 corpus), ``deltas.safetensors`` (the weight ledger's accumulated
updates, ``delta.<layer>``), ``preserved.safetensors`` (the keys behind K_p K_pᵀ) and
``stats.safetensors`` (C0 and the method's tensors; empty without statistics). FT and IKE
read their ``state.json`` through :func:`read_state_meta` too; the editors that keep one tensor
file beside it (FT's deltas, GRACE's codebook, WISE's memories) write and read both through
:func:`write_editor_state` and :func:`read_editor_state`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ...errors import UserError
from ...jsontext import dumps
from ...paths import atomic_path
from .preserved import PreservedKeys

# 2: preserved.safetensors holds the keys behind K_p K_pᵀ (and a base after a fold), listed
# in state.json's "preserved"; 1 held the matrices (cp.<layer>), still read.
STATE_VERSION = 2


class StateError(UserError, ValueError):
    pass


def read_state_meta(directory: Path, method: str, versions: tuple[int, ...]) -> dict:
    """``state.json`` of a saved editor state, checked to be ``method``'s in a readable version."""
    try:
        meta = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"{directory}: not a {method} editor state ({exc})") from None
    if meta.get("method") != method or meta.get("version") not in versions:
        raise StateError(f"{directory}: state of {meta.get('method')!r} version {meta.get('version')}, "
                         f"not {method} version {' or '.join(map(str, versions))}")
    return meta


def write_editor_state(directory: Path, editor, version: int, tensors_file: str, tensors: dict[str, torch.Tensor],
                       **fields) -> Path:
    """Atomically, ``tensors_file`` and ``state.json``: the header every editor's state carries
    (version, method, model id and type, settings), then the editor's own ``fields``."""
    meta = {"version": version, "method": editor.name, "model_id": editor.model_id,
            "model_type": editor.model.config.model_type, "hparams": editor.hp.model_dump(mode="json"), **fields}
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        save_file(tensors, tmp / tensors_file)
        (tmp / "state.json").write_text(dumps(meta, directory / "state.json", indent=2))
    return directory


def read_editor_state(directory: Path, editor, version: int, tensors_file: str, what: str,
                      device: str = "cpu") -> tuple[dict, dict[str, torch.Tensor]]:
    """A state :func:`write_editor_state` wrote, checked to be ``editor``'s method in ``version``
    and for its model type: (``state.json``, the tensors). ``what`` names the tensors in errors."""
    meta = read_state_meta(directory, editor.name, (version,))
    try:
        tensors = load_file(directory / tensors_file, device=device)
    except (OSError, ValueError) as exc:
        raise StateError(f"{directory}: {editor.name} editor state without readable {what} ({exc})") from None
    model_type = editor.model.config.model_type
    if meta.get("model_type") != model_type:
        raise StateError(f"{directory}: state for a {meta.get('model_type')} model, not {model_type}")
    return meta, tensors


def write_lte_state(directory: Path, meta: dict, deltas: dict[str, torch.Tensor], preserved: PreservedKeys,
                    stats: dict[str, torch.Tensor]) -> Path:
    """Write an LTE editor's state to ``directory`` atomically (the files: module docstring)."""
    with atomic_path(directory) as tmp:
        tmp.mkdir(parents=True)
        (tmp / "state.json").write_text(dumps(meta, directory / "state.json", indent=2))
        save_file(deltas, tmp / "deltas.safetensors")
        save_file(preserved.tensors(), tmp / "preserved.safetensors")
        save_file(stats, tmp / "stats.safetensors")
    return directory


def read_lte_meta(directory: Path, method: str, model_type: str, layers: list[int], hp=None) -> dict:
    """``state.json`` of an LTE editor state, checked to fit an editor of ``method`` on a
    ``model_type`` model editing ``layers`` (and making targets as ``hp`` does), in a version
    this editprobe reads."""
    try:
        meta = json.loads((directory / "state.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StateError(f"{directory}: not an editor state ({exc})") from None
    if meta.get("method") != method:
        raise StateError(f"{directory}: state of method {meta.get('method')!r}, this editor is {method!r}")
    if meta.get("model_type") != model_type:
        raise StateError(f"{directory}: state for a {meta.get('model_type')} model, not {model_type}")
    if meta["hparams"]["layers"] != layers:
        raise StateError(f"{directory}: edit layers {meta['hparams']['layers']} differ from {layers}")
    for field, default in (("targets", "spread"), ("replay_targets", "per-batch")):  # states before these fields
        saved = meta["hparams"].get(field, default)
        if hp is not None and saved != getattr(hp, field):
            raise StateError(f"{directory}: state made with {field}: {saved}, this editor has {getattr(hp, field)}")
    if meta.get("version") not in (1, STATE_VERSION):
        raise StateError(f"{directory}: state version {meta.get('version')}, this editprobe reads 1 to "
                         f"{STATE_VERSION}")
    return meta


def read_preserved(directory: Path, meta: dict) -> PreservedKeys:
    """The preserved keys of a state (version 1: rebuilt from the saved matrices)."""
    tensors = load_file(directory / "preserved.safetensors")
    if meta["version"] == 1:
        return PreservedKeys.from_matrices({int(k.split(".")[1]): v for k, v in tensors.items()})
    try:
        return PreservedKeys.from_saved(meta["preserved"], tensors)
    except KeyError as exc:
        raise StateError(f"{directory}: preserved keys incomplete, {exc.args[0]} missing") from None


def read_lte_tensors(directory: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The saved deltas and statistics, both read before either is applied."""
    return load_file(directory / "deltas.safetensors"), load_file(directory / "stats.safetensors")
