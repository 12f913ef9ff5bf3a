"""Edited models as Hugging Face checkpoints: saving one (``edit --save-model``, a run's
``save_model``), finding one (a directory or a hub id), its fingerprint, and reading its
weights tensor by tensor (``editprobe evaluate``, docs/evaluate.md).

A saved checkpoint is what ``save_pretrained`` writes (safetensors weights, config.json),
the tokenizer, and ``editprobe-edit.json``: which records, settings, method, seed and dtype
made it. Its **fingerprint** is the sha256 over its weights files and config.json (each
file's name and digest, in name order), so two copies of the same edit have the same one.
Only safetensors weights are read: ``torch.load`` of a ``.bin`` file can run code.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..paths import atomic_path, file_sha256, read_json_object
from ..jsontext import dumps

SIDECAR = "editprobe-edit.json"
SIDECAR_VERSION = 1
WEIGHTS = "*.safetensors"
# What decides whether a checkpoint's weights fit a model: a checkpoint that differs from
# the original in one of these is another architecture, not an edit of it.
STRUCTURE = ("model_type", "architectures", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "vocab_size", "tie_word_embeddings",
             "n_embd", "n_layer", "n_head", "n_inner")


class CheckpointError(UserError, ValueError):
    pass


# --- saving -----------------------------------------------------------------------------------
def save_edited_model(model, tokenizer, directory: str | Path, made_by: Mapping[str, Any]) -> Path:
    """Write ``model`` as it is now (its weights in its dtype), its tokenizer and the sidecar
    ``made_by`` (plus the fingerprint) to ``directory``, atomically: a reader sees the old
    directory or the complete new one, never half of it."""
    directory = Path(directory)
    with atomic_path(directory) as tmp:
        model.save_pretrained(tmp)  # safetensors: transformers' only format since v5
        tokenizer.save_pretrained(tmp)
        sidecar = {"sidecar_version": SIDECAR_VERSION, **made_by, "fingerprint": fingerprint(tmp)}
        (tmp / SIDECAR).write_text(dumps(sidecar, directory / SIDECAR, indent=2) + "\n")
    return directory


def editprobe_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("editprobe")
    except metadata.PackageNotFoundError:  # a source checkout on PYTHONPATH
        return "unknown"


# --- finding and identifying ------------------------------------------------------------------
def resolve_checkpoint(ref: str, option: str = "--edited") -> Path:
    """The local directory of the edited checkpoint ``ref``: a directory, or a hub id (its
    weights, config and tokenizer files, from the local cache when there). One line when it
    is neither, is missing, or holds no safetensors weights."""
    from .reference import resolve_model_reference

    try:
        found = resolve_model_reference(ref)
    except UserError as exc:
        raise CheckpointError(f"{option} {ref}: {str(exc).removeprefix(f'model {ref!r}: ')}") from None
    if found.kind == "builtin":
        raise CheckpointError(f"{option} {ref}: a built-in name is an unedited model; give the edited checkpoint's "
                              "directory (editprobe edit --save-model DIR) or hub id")
    if found.kind == "local":
        path = Path(ref).expanduser()
    else:
        import huggingface_hub

        try:
            path = Path(huggingface_hub.snapshot_download(
                ref, allow_patterns=[WEIGHTS, "*.json", "*.txt", "*.model", "*.jinja"], local_files_only=found.offline))
        except Exception as exc:  # noqa: BLE001 - any failure to fetch means the same here
            raise CheckpointError(f"{option} {ref}: cannot download it ({type(exc).__name__}); download it where "
                                  "there is network and give its directory") from None
    if not weight_files(path):
        others = sorted(p.name for p in path.glob("*.bin"))
        hint = (f" (it has {others[0]}: editprobe reads safetensors only, torch.load can run code; convert it with "
                "save_pretrained)") if others else ""
        raise CheckpointError(f"{option} {ref}: holds no {WEIGHTS} weights{hint}")
    return path


def weight_files(directory: Path) -> list[Path]:
    return sorted(Path(directory).glob(WEIGHTS))


def fingerprint(directory: str | Path) -> str:
    """sha256 over the weights files and config.json of a checkpoint directory."""
    directory = Path(directory)
    files = sorted(weight_files(directory) + [directory / "config.json"], key=lambda p: p.name)
    h = hashlib.sha256()
    for path in files:
        if path.is_file():
            h.update(f"{path.name}\0{file_sha256(path)}\n".encode())
    return h.hexdigest()


def module_fingerprint(model) -> str:
    """The fingerprint of a model in memory: sha256 over its tensors (name, dtype, shape and
    bytes, in name order) and its config; not the one of the same model saved to disk."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}\0{t.dtype}\0{tuple(tensor.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    h.update(model.config.to_json_string(use_diff=False).encode())
    return h.hexdigest()


def read_sidecar(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint's ``editprobe-edit.json`` (None: a checkpoint editprobe did not save)."""
    path = Path(directory) / SIDECAR
    if not path.is_file():
        return None
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


def read_config(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "config.json"
    try:
        return read_json_object(path)
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable ({exc})") from None


def checkpoint_dtype(directory: str | Path) -> str | None:
    """The dtype the checkpoint's config names (``dtype``, or ``torch_dtype`` before v5)."""
    config = read_config(directory)
    value = config.get("dtype") or config.get("torch_dtype")
    return str(value).removeprefix("torch.") if value else None


def check_same_structure(edited: Mapping[str, Any], original: Mapping[str, Any], what: str) -> None:
    """One line when the edited checkpoint's config is another architecture than the original's."""
    differ = [k for k in STRUCTURE if k in edited or k in original if edited.get(k) != original.get(k)]
    if differ:
        k = differ[0]
        raise CheckpointError(f"{what}: not an edit of the original model: config {k} is {edited.get(k)!r}, the "
                              f"original's {original.get(k)!r}" + (f" (and {len(differ) - 1} more)" if len(differ) > 1
                                                                     else ""))


# --- reading weights ---------------------------------------------------------------------------
class TensorSource:
    """The edited weights, one tensor at a time: the safetensors files of a directory, or a
    model in memory (:meth:`of_module`)."""

    def __init__(self, directory: Path | None = None, module=None) -> None:
        self.directory, self.module = directory, module

    @classmethod
    def of_module(cls, module) -> "TensorSource":
        return cls(module=module)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Every tensor's name and shape, read from the files' headers (no weights loaded)."""
        if self.module is not None:
            return {k: tuple(v.shape) for k, v in self.module.state_dict().items()}
        from safetensors import safe_open

        out: dict[str, tuple[int, ...]] = {}
        for path in weight_files(self.directory):
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                out.update({k: tuple(fh.get_slice(k).get_shape()) for k in fh.keys()})
        return out

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) one at a time: at most one edited tensor is in memory beside the model."""
        if self.module is not None:
            yield from self.module.state_dict().items()
            return
        from safetensors import safe_open

        for path in weight_files(self.directory):
            with safe_open(str(path), framework="pt", device="cpu") as fh:
                for key in fh.keys():
                    yield key, fh.get_tensor(key)


def check_fits(source: TensorSource, model, what: str) -> None:
    """One line when the edited weights do not fit ``model`` tensor for tensor: a name the
    model lacks, a shape that differs, or a weight of the model the checkpoint lacks (tied
    weights aside: they are the tensor they are tied to)."""
    from .builtin import tied_parameter_names

    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    shapes = source.shapes()
    unknown = [k for k in shapes if k not in state]
    if unknown:
        raise CheckpointError(f"{what}: not an edit of the original model: it has {unknown[0]!r}, which the original "
                              f"lacks" + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""))
    wrong = [k for k in shapes if shapes[k] != state[k]]
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"{what}: not an edit of the original model: {k} has shape {list(shapes[k])}, the "
                              f"original's {list(state[k])}")
    missing = [k for k in state if k not in shapes and k not in tied_parameter_names(model)]
    if missing:
        raise CheckpointError(f"{what}: lacks the original model's {missing[0]!r}" +
                              (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "") +
                              "; save the whole edited model (save_pretrained)")

