"""Saving a job's edited model as a Hugging Face checkpoint (``edit --save-model DIR``, a
run's ``save_model``): which editors can be saved, where a run puts them, and the sidecar
that says what made each (models/checkpoint.py writes it; docs/evaluate.md)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import OptionError
from ..models.checkpoint import SIDECAR, editprobe_version, save_edited_model

MODELS = "models"  # a run's saved models: OUT/models/<dataset>__<method>/


class NotSavableError(OptionError):
    pass


def refuse_unsavable(methods: Iterable[str], option: str) -> None:
    """One line, before any work, for a method whose edit is not in the weights (IKE's prompt,
    a codebook or a side memory consulted in the forward): a checkpoint of its weights would
    be the unedited model."""
    from ..editing.registry import method_class

    for method in methods:
        if not method_class(method).edit_in_weights:
            raise NotSavableError(f"{option}: {method}'s edit is not in the model's weights (it lives in its prompt or "
                                  f"memory), so a saved checkpoint would be the unedited model; drop {option} for "
                                  f"{method}")


def check_save_location(directory: Path, overwrite: bool, option: str = "--save-model") -> None:
    """A new directory, or (with ``overwrite``) an edited model editprobe saved before; never
    anything else."""
    if not directory.exists():
        return
    if not directory.is_dir():
        raise OptionError(f"{option} {directory}: is a file; give a directory to save the edited model in")
    entries = [p.name for p in directory.iterdir()]
    if not entries:
        return
    if SIDECAR not in entries:
        raise OptionError(f"{option} {directory}: exists and holds {', '.join(sorted(entries)[:3])}, not an edited "
                          "model editprobe saved; choose another directory")
    if not overwrite:
        raise OptionError(f"{option} {directory}: holds an edited model saved before; pass --overwrite to replace it, "
                          "or choose another directory")


def run_model_dir(out: Path, dataset_key: str, method: str) -> Path:
    return Path(out) / MODELS / f"{dataset_key}__{method}"


def made_by(*, made_with: str, model: str, method: str, editor, data: str, n: int, records: Sequence,
            seed: int, batch_size: int, dtype: str, options: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's fields: the records (ids, in the order they were edited), the method and
    its settings, the seed, the dtype and the editprobe version that made the checkpoint."""
    provenance = editor.provenance()
    return {"made_with": made_with, "editprobe_version": editprobe_version(), "original_model": model,
            "method": method, "variant": provenance.get("variant"), "hparams": provenance.get("hparams"),
            "c0": provenance.get("c0"), "data": data, "n": n, "records": [r.id for r in records],
            "seed": seed, "batch_size": batch_size, "dtype": dtype, "stage": "positive", **options}


def save_model(model, tokenizer, directory: Path, fields: dict[str, Any]) -> Path:
    return save_edited_model(model, tokenizer, directory, fields)


def model_dtype(model) -> str:
    return str(next(model.parameters()).dtype).removeprefix("torch.")
