"""What identifies a model and a tokenizer for the caches (C0 statistics, target cache,
RLEdit's trained network): hashes stable across devices and processes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit patterns of a tensor as integers (8-byte types become int32 pairs)."""
    int_type = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int32}[t.element_size()]
    return t.detach().contiguous().view(int_type)


def _row_sums(bits: torch.Tensor) -> np.ndarray:
    # torch's integer reductions on CPU are ~20x slower than numpy's; on GPU stay on device.
    if bits.device.type == "cpu":
        return bits.numpy().sum(axis=1, dtype=np.int64)
    return bits.sum(dim=1, dtype=torch.int64).cpu().numpy()


def model_fingerprint(model: nn.Module, sample: int = 4096) -> str:
    """A hash of the config and the weights, stable across devices.

    Copying a multi-GB GPU model to the host to hash every byte on each lookup is slow, so
    each parameter contributes (a) a strided sample of its raw bytes and (b) exact integer
    row sums of its bit patterns, computed on the parameter's device. Integer sums are
    order-independent (the same on CPU and GPU, so moving a model does not invalidate its
    statistics) and change whenever any single entry changes.
    """
    h = hashlib.sha256()
    config = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    h.update(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in model.named_parameters():
        h.update(f"{name}|{tuple(p.shape)}|{p.dtype}".encode())
        bits = _bits(p).reshape(p.shape[0] if p.dim() > 1 else 1, -1)
        flat = bits.reshape(-1)
        step = max(1, flat.numel() // sample)
        h.update(flat[::step].cpu().numpy().tobytes())
        h.update(_row_sums(bits).tobytes())
    return h.hexdigest()


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides the token ids: the fast tokenizer's full definition (vocab,
    merges, BOS/EOS template) or, for a slow one, its vocabulary, plus a probe encoding."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        h.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    else:
        # Truncation and padding are left behind by each call's arguments, not part of the
        # tokenizer's identity: serialise without them, then put them back.
        truncation, padding = backend.truncation, backend.padding
        backend.no_truncation()
        backend.no_padding()
        try:
            h.update(backend.to_str().encode())
        finally:
            if truncation:
                backend.enable_truncation(**truncation)
            if padding:
                backend.enable_padding(**padding)
    h.update(json.dumps(tokenizer("The capital of France is Paris.", add_special_tokens=True)["input_ids"]).encode())
    return h.hexdigest()
