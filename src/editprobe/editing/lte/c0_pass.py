"""The pass that accumulates C0 (docs/covariance.md): Σ k kᵀ and the token count of the
MLP-output-projection inputs at the requested layers, all from one forward pass per batch
that stops as soon as the deepest layer's key exists. Token batching is corpus_batches.py,
the product gram.py; the store that caches the result is stats_store.py."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from ...models.adapters import ModelAdapter
from ...models.hooks import StopForward, first_tensor, run_until_stop
from .corpus_batches import BATCH_ROWS, BATCH_TOKENS, POOL_DOCS, DocumentBatches
from .gram import add_gram, symmetric
from .solvers import NumericalError
from .stats_types import ACCUM_DTYPES, LayerStats


def model_max_positions(model: nn.Module) -> int | None:
    for attr in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


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
    bar = _token_bar(f"C0 layers {layers}", progress)
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


class _TokenLines:
    """The token count as plain lines (editprobe.progress), where stderr is not a terminal:
    tqdm would write one endless line of carriage returns into a log."""

    def __init__(self, description: str) -> None:
        from ...progress import PlainProgress

        self._lines = PlainProgress("", description, None, 0, unit="tokens", every_s=30)

    def update(self, n_tok: int) -> None:
        self._lines.advance(n_tok)

    def set_postfix(self, **_: object) -> None:
        """tqdm's docs counter: the lines leave it out (the stats say how many were read)."""

    def close(self) -> None:
        self._lines.finish()


def _token_bar(description: str, enabled: bool):
    """tqdm's bar on a terminal (or nothing when not ``enabled``), else plain lines."""
    import sys

    if enabled and not sys.stderr.isatty():
        return _TokenLines(description)
    return tqdm(desc=description, unit="tok", unit_scale=True, disable=not enabled)
