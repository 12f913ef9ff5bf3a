"""Causal tracing's restored runs (analysis/tracing.py): the corrupted run with each job's
clean hidden states put back, by hooks on a full forward (the reference way) or replayed
from the lowest restored layer over a cache of the positions before the first restored one.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import ExitStack

import torch
from torch import nn

from ..models.adapters import ModelAdapter
from ..models.hooks import capture, edit_output
from ..models.resume_forward import (ForwardInputs, block_output_arity, final_hidden, logits_at, resume_from,
                             supports_prefix_cache)
from .trace_types import Prepared, TraceSettings


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def target_probs(model: nn.Module, ids: torch.Tensor, target_id: int) -> torch.Tensor:
    """p(target | each row) at the last position, in fp32."""
    kwargs = {"use_cache": False}
    # Only the last position's logits are needed; a full vocab × positions × rows tensor
    # would dominate memory for real vocabularies.
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        kwargs["logits_to_keep"] = 1
    logits = model(input_ids=ids, **kwargs).logits[:, -1].float()
    return logits.softmax(-1)[:, target_id]


def _restore_fn(rows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(h: torch.Tensor) -> torch.Tensor:
        h = h.clone()  # the module's own output may be reused by the caller
        h[rows, positions] = values.to(h.dtype)
        return h

    return fn


def window_layers(kind: str, layer: int, window: int, num_layers: int) -> range:
    """The layers restored for a job at ``layer``: itself for ``block``, else ``window``
    layers starting ``window // 2`` below it, clipped to the model."""
    if kind == "block":
        return range(layer, layer + 1)
    start = layer - window // 2
    return range(max(0, start), min(num_layers, start + window))


Job = tuple[str, int, int]  # (kind, layer, position)


def _restore_hooks(
    stack: ExitStack, model: nn.Module, adapter: ModelAdapter, chunk: Sequence[Job], clean: dict,
    settings: TraceSettings, num_layers: int, offset: int, skip_kinds: tuple[str, ...] = (),
) -> None:
    """Enter hooks restoring, for each job of ``chunk`` (``samples`` rows each), the clean
    output of every module it covers at its position (``offset`` = the first position fed)."""
    device, S = model_device(model), settings.samples
    restores: dict[tuple[str, int], tuple[list[int], list[int]]] = {}  # module -> (jobs, positions)
    for j, (k, layer, t) in enumerate(chunk):
        if k in skip_kinds:
            continue
        for covered in window_layers(k, layer, settings.layers_window, num_layers):
            js, ts = restores.setdefault((k, covered), ([], []))
            js.append(j)
            ts.append(t)
    sample_offsets = torch.arange(S, device=device)
    for (k, layer), (js, ts) in restores.items():
        rows = (torch.tensor(js, device=device)[:, None] * S + sample_offsets).flatten()
        positions = torch.tensor(ts, device=device).repeat_interleave(S)
        fn = _restore_fn(rows, positions - offset, clean[(k, layer)][positions])
        stack.enter_context(edit_output(adapter.module(model, k, layer), fn))


def restored_reference(
    model: nn.Module, adapter: ModelAdapter, prep: Prepared, ids: torch.Tensor, corrupt: Callable,
    clean: dict, jobs: Sequence[Job], settings: TraceSettings,
) -> list[float]:
    """Mean restored probability of each job: full forwards from the embeddings."""
    S, num_layers = settings.samples, adapter.n_layers(model)
    embed = adapter.module(model, "embed")
    per_forward = max(1, settings.max_rows // S)
    out: list[float] = []
    for start in range(0, len(jobs), per_forward):
        chunk = jobs[start : start + per_forward]
        with ExitStack() as stack:
            stack.enter_context(edit_output(embed, corrupt))
            _restore_hooks(stack, model, adapter, chunk, clean, settings, num_layers, 0)
            probs = target_probs(model, ids.repeat(len(chunk) * S, 1), prep.target_id)
        out += probs.view(len(chunk), S).mean(dim=1).tolist()
    return out


def _start_layer(kind: str, layer: int, window: int, num_layers: int) -> int:
    """The block whose (corrupted) output a job's forward starts from, -1 = the embeddings:
    a block job restores that block's own output in the emitted state; an mlp/attn job
    runs from its window's first layer."""
    return layer if kind == "block" else window_layers(kind, layer, window, num_layers).start - 1


def restored_replayed(
    model: nn.Module, adapter: ModelAdapter, prep: Prepared, ids: torch.Tensor, corrupt: Callable,
    clean: dict, jobs: Sequence[Job], settings: TraceSettings,
) -> list[float]:
    """Mean restored probability of each job, each forward starting at its jobs' first
    restored layer and position from the corrupted run's states (module docstring)."""
    from transformers import DynamicCache

    device, S = model_device(model), settings.samples
    num_layers, length = adapter.n_layers(model), ids.shape[1]
    embed = adapter.module(model, "embed")

    # The corrupted run once: the embedding output (noise included), every block's output
    # and every layer's keys/values; the block arity is observed under the same settings.
    def new_cache():
        return DynamicCache(config=model.config)

    cacheable = supports_prefix_cache(model)
    cache = new_cache() if cacheable else None
    stored_paths = [adapter.path("embed")] + [adapter.path("block", layer) for layer in range(num_layers)]
    run = ForwardInputs(ids.repeat(S, 1), torch.arange(length, device=device)[None], cache)
    with edit_output(embed, corrupt), capture(model, stored_paths) as got:  # noise first, then capture
        arity = block_output_arity(adapter.block(model, 0), lambda: final_hidden(model, run))
    states = [got[p] for p in stored_paths]  # states[r + 1]: block r's output, [S, positions, d]
    # per layer: keys, values [S, heads, positions, head dim]
    prefix_kv = [(layer.keys, layer.values) for layer in cache.layers] if cacheable else []

    # Group by (start layer, first position fed), so each forward starts at one layer and
    # feeds one suffix; a job's own position is its group's first without a cache.
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (k, layer, t) in enumerate(jobs):
        r = _start_layer(k, layer, settings.layers_window, num_layers)
        groups.setdefault((r, t if cacheable else 0), []).append(i)

    out = [0.0] * len(jobs)
    per_forward = max(1, settings.max_rows // S)
    sample_offsets = torch.arange(S, device=device)
    for (r, offset), members in sorted(groups.items()):
        for start in range(0, len(members), per_forward):
            idx = members[start : start + per_forward]
            chunk = [jobs[i] for i in idx]
            n = len(chunk)
            emitted = states[r + 1][:, offset:].repeat(n, 1, 1)
            block_jobs = [(j, t) for j, (k, _, t) in enumerate(chunk) if k == "block"]
            if block_jobs:  # their own block's output, restored in the emitted state
                js = torch.tensor([j for j, _ in block_jobs], device=device)
                ts = torch.tensor([t for _, t in block_jobs], device=device).repeat_interleave(S)
                rows = (js[:, None] * S + sample_offsets).flatten()
                emitted[rows, ts - offset] = clean[("block", r)][ts].to(emitted.dtype)
            step_cache = None
            if cacheable:
                step_cache = cache if offset else new_cache()
                if offset:
                    for layer, (keys, values) in zip(cache.layers, prefix_kv):
                        layer.keys = keys[:, :, :offset].repeat(n, 1, 1, 1)
                        layer.values = values[:, :, :offset].repeat(n, 1, 1, 1)
            positions = torch.arange(offset, length, device=device)[None]
            step = ForwardInputs(ids[:, offset:].repeat(n * S, 1), positions, step_cache)
            with ExitStack() as stack:
                if r < 0:
                    stack.enter_context(edit_output(embed, lambda _h, e=emitted: e))
                else:
                    stack.enter_context(resume_from(model, adapter, r, arity, lambda _h, e=emitted: e))
                _restore_hooks(stack, model, adapter, chunk, clean, settings, num_layers, offset, skip_kinds=("block",))
                hidden = final_hidden(model, step)[:, -1]
            probs = logits_at(model, hidden).softmax(-1)[:, prep.target_id]
            for i, p in zip(idx, probs.view(n, S).mean(dim=1).tolist()):
                out[i] = p
    return out
