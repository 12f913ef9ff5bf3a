"""C0 (the key second moment at the edit layers) vs a bare forward pass over the same tokens.

Measured: the statistics computed the way an edit computes them on a cold cache —
``CovarianceStore.get`` into an empty temporary directory (fingerprints, reading and
tokenizing the corpus, the truncated pass with its hooks, Σ k kᵀ, writing the files), with
the shipped MEMIT hyperparameters' corpus, document count, length and accumulation dtype.
Floor: the same token batches (built beforehand by the same batching code; tokenization
not counted) through the model cut after the deepest edit layer — no hooks, no
accumulation, no LM head. Both run in one process, floor first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from contextlib import contextmanager

import torch
from torch import nn

from editprobe.data import load_corpus
from editprobe.editing.lte.corpus_batches import DocumentBatches
from editprobe.editing.lte.covariance import CovarianceStore, model_max_positions
from editprobe.editing.settings.model_keys import hparams_key
from editprobe.editing.registry import resolve_hparams
from editprobe.models import load_model

from .table import Ratio, format_table

GOAL = 1.2


@contextmanager
def _cut_after(model: nn.Module, adapter, top: int):
    """The decoder stack (embeddings, blocks 0..top, final norm) with later blocks removed."""
    parent_path, _, attr = adapter.layers.rpartition(".")
    parent = model.get_submodule(parent_path)
    blocks = getattr(parent, attr)
    setattr(parent, attr, nn.ModuleList(list(blocks)[: top + 1]))
    try:
        yield parent
    finally:
        setattr(parent, attr, blocks)


def _bare_pass(stack: nn.Module, batches, device) -> None:
    with torch.no_grad():
        for b in batches:
            stack(input_ids=b.input_ids.to(device), attention_mask=b.attention_mask.to(device), use_cache=False)


def run(loaded, layers=(4, 5, 6, 7, 8), n_samples: int | None = None) -> list[Ratio]:
    model, tok, adapter = loaded
    hp = resolve_hparams("memit", hparams_key(loaded.name))
    n_docs = hp.mom2_n_samples if n_samples is None else n_samples
    cap = model_max_positions(model)
    max_len = min(hp.mom2_max_len, cap) if cap else hp.mom2_max_len
    corpus = load_corpus(hp.mom2_corpus, sample=hp.mom2_sample, seed=hp.mom2_sample_seed)
    device = next(model.parameters()).device
    layers = sorted(layers)
    model.eval()

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    start = time.perf_counter()
    docs = DocumentBatches(tok, corpus.texts(n_docs), n_docs=n_docs, max_len=max_len)
    batches = list(docs)
    tokenize_s = time.perf_counter() - start
    n_tok = sum(int(b.attention_mask.sum()) for b in batches)
    padded = sum(b.input_ids.numel() for b in batches)

    with _cut_after(model, adapter, layers[-1]) as stack:
        _bare_pass(stack, batches[:1], device)  # warm-up: the largest batch comes first
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        _bare_pass(stack, batches, device)
        sync()
        floor_s, floor_cpu = time.perf_counter() - start, time.process_time() - cpu

    with tempfile.TemporaryDirectory(prefix="editprobe-c0-bench-") as tmp:
        store = CovarianceStore(tmp, progress=False)
        sync()
        start, cpu = time.perf_counter(), time.process_time()
        stats = store.get(model, tok, adapter, layers, lambda: corpus.texts(n_docs), corpus.identity, n_docs=n_docs,
                          max_len=hp.mom2_max_len, dtype=getattr(torch, hp.mom2_dtype), model_id=loaded.name)
        sync()
        measured_s, measured_cpu = time.perf_counter() - start, time.process_time() - cpu
    got = stats[layers[-1]]
    if (got.count, got.n_docs) != (n_tok, docs.docs_read):
        raise RuntimeError(f"C0 read {got.n_docs} documents / {got.count} tokens, the floor {docs.docs_read} / {n_tok}")

    rows, width = max(b.input_ids.shape[0] for b in batches), max(b.input_ids.shape[1] for b in batches)
    # CPU time as well: on a shared machine it moves less than wall time between the two runs.
    cpu_ratio = f", CPU-time ratio {measured_cpu / floor_cpu:.2f}" if device.type == "cpu" else ""
    detail = (f"{docs.docs_read} docs, {n_tok:,} tokens (+{padded / n_tok - 1:.1%} padding), {len(batches)} batches "
              f"<= {rows}x{width}; C0 {n_tok / measured_s:,.0f} tok/s, bare {n_tok / floor_s:,.0f} tok/s{cpu_ratio}; "
              f"tokenizing {tokenize_s:.1f} s, counted in C0 only; {hp.mom2_dtype} sums, {str(model.dtype)[6:]} model, "
              f"{torch.get_num_threads()} threads")
    span = f"{layers[0]}-{layers[-1]}" if layers == list(range(layers[0], layers[-1] + 1)) else ",".join(map(str, layers))
    return [Ratio(f"C0 (layers {span})", f"bare forward cut after layer {layers[-1]}", measured_s, floor_s, GOAL, detail)]


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.c0")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n-samples", type=int, default=None, help="documents (default: the shipped hparams')")
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(format_table(run(load_model(args.model), n_samples=args.n_samples)))


if __name__ == "__main__":
    main()
