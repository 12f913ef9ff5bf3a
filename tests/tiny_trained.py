"""The trained tiny models of the whole session, each trained once. No tests live here.

Every test module that needs a trained tiny model takes it from here (``fresh``, or the
``trained_llama`` fixture of conftest.py): training is the slow part (seconds per model), so
one copy per (architecture, seed, steps) serves every module. ``fresh`` puts the trained
weights back before handing the model out, so a test may edit it freely; a module that keeps
the model across tests and edits it restores it itself (or asks ``fresh`` again).

``save_workspace`` writes a trained model and the tiny corpus to disk for the command-line
tests, from the same in-memory copy (saving takes milliseconds, training seconds).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch

from editprobe.models.tiny import tiny_corpus, tiny_model, trained_tiny_model

DEFAULT_STEPS = 150  # trained_tiny_model's default: the engine tests' model


@functools.lru_cache(maxsize=None)
def _trained(model_type: str, seed: int, steps: int):
    # Two cores are shared by several test runs: one thread keeps tiny models fast, and the
    # same thread count every time keeps the trained weights the same whichever test asks first.
    torch.set_num_threads(1)
    loaded = trained_tiny_model(model_type, seed=seed, steps=steps)
    pristine = {k: v.detach().clone() for k, v in loaded.model.state_dict().items()}
    return loaded, pristine


def fresh(model_type: str = "llama", *, seed: int = 0, steps: int = DEFAULT_STEPS):
    """The session's trained tiny model with its trained weights put back."""
    loaded, weights = _trained(model_type, seed, steps)
    loaded.model.load_state_dict(weights)
    return loaded


def pristine(model_type: str = "llama", *, seed: int = 0, steps: int = DEFAULT_STEPS) -> dict[str, torch.Tensor]:
    """The trained weights (read only: clone before changing them)."""
    return _trained(model_type, seed, steps)[1]


def twin(model_type: str = "llama", *, seed: int = 0, steps: int = DEFAULT_STEPS):
    """A second, separate model object with the same trained weights (and tokenizer)."""
    loaded, weights = _trained(model_type, seed, steps)
    other = tiny_model(model_type, seed=seed, tokenizer=loaded.tokenizer)
    other.model.load_state_dict(weights)
    return other


def save_model(path: Path, model_type: str = "llama", *, seed: int = 0, steps: int = DEFAULT_STEPS):
    """The trained model and its tokenizer saved as a local model directory; returns the
    (restored) in-memory model it was saved from."""
    loaded = fresh(model_type, seed=seed, steps=steps)
    loaded.model.save_pretrained(path)
    loaded.tokenizer.save_pretrained(path)
    return loaded


def write_corpus(path: Path, n_docs: int = 100) -> Path:
    """The tiny corpus as a text file (documents separated by blank lines), for C0."""
    path.write_text("\n\n".join(tiny_corpus().texts(n_docs)))
    return path


def save_workspace(root: Path, *, steps: int = DEFAULT_STEPS) -> dict:
    """``root/model`` (the trained tiny Llama saved) and ``root/corpus.txt``; ``loaded`` is
    the in-memory model they were saved from."""
    loaded = save_model(root / "model", steps=steps)
    return {"model": root / "model", "corpus": write_corpus(root / "corpus.txt"), "loaded": loaded}
