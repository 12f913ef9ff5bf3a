"""The key second-moment statistic C0 and its on-disk store (docs/engine.md, docs/covariance.md).

C0^l = (1/N_tok)·Σ_t k_t k_tᵀ, uncentred, over every non-pad token of a corpus, where k is
the input of layer l's MLP output projection. All requested layers come from one forward
pass per batch that stops as soon as the deepest layer's key exists; token batching is in
corpus_batches, the product in gram. The on-disk store (per-layer safetensors + JSON, keyed
by everything that changes the statistic, checked on read, locked while computed) is
stats_store.py; ``CovarianceStore`` and ``StatsKey`` are importable from here too.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..models.adapters import ModelAdapter
from ..models.hooks import StopForward, first_tensor, run_until_stop
from .corpus_batches import BATCH_ROWS, BATCH_TOKENS, POOL_DOCS, DocumentBatches
from .gram import add_gram, symmetric
from .solvers import NumericalError

__all__ = ["CovarianceStore", "LayerStats", "StatsKey", "accumulate_second_moment", "model_fingerprint",
           "model_max_positions", "tokenizer_fingerprint"]

ACCUM_DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class LayerStats:
    """Σ k kᵀ over ``count`` non-pad tokens from ``n_docs`` documents (CPU tensor)."""

    layer: int
    mom2_sum: torch.Tensor
    count: int
    n_docs: int

    def mean_second_moment(self) -> torch.Tensor:
        """C0 = Σ k kᵀ / N_tok (what λ and AlphaEdit's absolute threshold assume)."""
        if self.count == 0:
            raise ValueError(f"layer {self.layer}: no tokens were accumulated")
        return self.mom2_sum / self.count


# ------------------------------------------------------------------ model identity


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


def model_max_positions(model: nn.Module) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


# ------------------------------------------------------------------ accumulation


@contextmanager
def _keys_until_last(model: nn.Module, paths: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input of the modules at ``paths`` as each is called; the last one's call
    ends the pass (StopForward) before it runs: its product is not needed."""
    store: dict[str, torch.Tensor] = {}

    def make_hook(path: str, last: bool):
        def pre_hook(module, args, kwargs):
            value = first_tensor(args) if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            store[path] = value.detach()
            if last:
                raise StopForward

        return pre_hook

    handles = [model.get_submodule(p).register_forward_pre_hook(make_hook(p, i == len(paths) - 1), with_kwargs=True)
               for i, p in enumerate(paths)]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def accumulate_second_moment(
    model: nn.Module,
    tokenizer,
    adapter: ModelAdapter,
    layers: Iterable[int],
    texts: Iterable[str],
    *,
    n_docs: int | None = None,
    max_len: int = 1024,
    dtype: torch.dtype = torch.float32,
    batch_size: int = BATCH_ROWS,
    max_batch_tokens: int = BATCH_TOKENS,
    pool_docs: int = POOL_DOCS,
    progress: bool = True,
) -> dict[int, LayerStats]:
    """Σ k kᵀ and token counts of the MLP-output-projection inputs at ``layers``.

    Reads up to ``n_docs`` non-blank documents, truncates each to ``max_len`` tokens (and
    the model's context length), sorts each pool of ``pool_docs`` documents by length into
    batches of at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens, and
    accumulates in ``dtype`` on the model's device whatever the model's dtype.
    """
    layers = sorted(set(layers))
    if not layers:
        raise ValueError("no layers requested")
    if dtype not in ACCUM_DTYPES.values():
        raise ValueError(f"accumulation dtype must be float32 or float64, not {dtype}")
    for layer in layers:
        adapter.block(model, layer)  # clear range error before any work
    cap = model_max_positions(model)
    max_len = min(max_len, cap) if cap else max_len
    paths = {layer: adapter.path("mlp_out", layer) for layer in layers}
    device = next(model.parameters()).device
    d_ff = adapter.d_ff(model)
    sums = {layer: torch.zeros(d_ff, d_ff, dtype=dtype, device=device) for layer in layers}
    batches = DocumentBatches(tokenizer, texts, n_docs=n_docs, max_len=max_len, batch_size=batch_size,
                              max_batch_tokens=max_batch_tokens, pool_docs=pool_docs)
    count = 0
    was_training = model.training
    model.eval()  # dropout would bias the statistic
    bar = tqdm(desc=f"C0 layers {layers}", unit="tok", unit_scale=True, disable=not progress)
    try:
        with _keys_until_last(model, [paths[layer] for layer in layers]) as store:
            for batch in batches:
                batch = batch.to(device)
                store.clear()
                with torch.no_grad():
                    run_until_stop(lambda: model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                                 use_cache=False))
                keep = batch.attention_mask.bool()  # padding never enters the statistic
                n_tok = int(keep.sum())
                unpadded = n_tok == keep.numel()  # then every row is kept: a view, no copy
                for layer, path in paths.items():
                    if path not in store:
                        raise RuntimeError(f"layer {layer}: {path} did not run in the forward pass")
                    keys = store[path]
                    add_gram(sums[layer], keys.reshape(-1, keys.shape[-1]) if unpadded else keys[keep])
                count += n_tok
                bar.update(n_tok)
                bar.set_postfix(docs=batches.docs_read)
    finally:
        bar.close()
        model.train(was_training)
    docs_read = batches.docs_read
    out = {}
    for layer in layers:
        total = symmetric(sums[layer]).cpu()
        if not bool(torch.isfinite(total).all()):
            raise NumericalError(f"layer {layer}: the key second moment contains NaN or inf")
        out[layer] = LayerStats(layer, total, count, docs_read)
    return out


def __getattr__(name: str):
    # The store lives in stats_store.py (which imports this module); its names stay
    # importable from here, resolved on first use so that neither import order breaks.
    if name in ("CovarianceStore", "StatsKey"):
        from . import stats_store

        return getattr(stats_store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
