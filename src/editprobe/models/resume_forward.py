"""Run a model from a stored hidden state instead of from the embeddings.

During target optimization nothing below the layer where the free vector is added
changes, so its output is computed once; each step then starts from it. The blocks below
are temporarily replaced by stand-ins (a pass-through, and at the start layer a module
that emits the stored state), which keeps every model-level detail (masks, rotary
embeddings, final norm) in the model's own code for any architecture. Logits are then
computed only at the positions the loss needs. Causal tracing resumes its restored runs
the same way. (Not the forward-replay *targets* of editing/lte/forward_replay.py.)
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn

from .adapters import ModelAdapter

# Attributes model-level code may read from a decoder layer while iterating over them.
_LAYER_ATTRS = ("attention_type", "layer_idx", "is_sliding", "sliding_window", "layer_type")


class _StandIn(nn.Module):
    def __init__(self, original: nn.Module, n_outputs: int, emit: Callable[[torch.Tensor], torch.Tensor] | None):
        super().__init__()
        self._n_outputs = n_outputs  # 0: the block returns a bare tensor
        self._emit = emit
        for name in _LAYER_ATTRS:
            if hasattr(original, name):
                object.__setattr__(self, name, getattr(original, name))

    def forward(self, hidden_states=None, *args, **kwargs):
        out = self._emit(hidden_states) if self._emit is not None else hidden_states
        return out if self._n_outputs == 0 else (out,) + (None,) * (self._n_outputs - 1)


def block_output_arity(block: nn.Module, probe: Callable[[], object]) -> int | None:
    """0 when the block returns a tensor, else the tuple's length (observed once); None when
    ``probe`` stopped the forward inside the block (e.g. keys read at layer 0 only)."""
    seen: list[int] = []
    handle = block.register_forward_hook(lambda m, a, o: seen.append(0 if isinstance(o, torch.Tensor) else len(o)))
    try:
        probe()
    finally:
        handle.remove()
    return seen[0] if seen else None


@contextmanager
def resume_from(
    model: nn.Module, adapter: ModelAdapter, layer: int, arity: int, emit: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Within the context, blocks ``0..layer`` are skipped and block ``layer``'s output is
    ``emit(...)``; blocks above run normally."""
    blocks = adapter.block_list(model)
    originals = [blocks[i] for i in range(layer + 1)]
    try:
        for i in range(layer):
            blocks[i] = _StandIn(originals[i], arity, None)
        blocks[layer] = _StandIn(originals[layer], arity, emit)
        yield
    finally:
        for i, module in enumerate(originals):
            blocks[i] = module


@dataclass
class ForwardInputs:
    """One forward's inputs, in the form :func:`final_hidden` takes: the token ids, their
    positions and attention mask (None: the model's defaults) and a KV cache holding the
    positions before them (None: no cache, and the forward keeps none)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor | None = None
    cache: object | None = None
    attention_mask: torch.Tensor | None = None

    def forward_kwargs(self) -> dict:
        kw = dict(input_ids=self.input_ids, use_cache=self.cache is not None)
        if self.attention_mask is not None:
            kw["attention_mask"] = self.attention_mask
        if self.position_ids is not None:
            kw["position_ids"] = self.position_ids
        if self.cache is not None:
            kw["past_key_values"] = self.cache
        return kw


def supports_prefix_cache(model: nn.Module) -> bool:
    """Whether the model's KV cache is made of plain dynamic layers only, so that the keys and
    values of a shared prefix can be computed once and then repeated, cropped or edited in
    place; sliding-window layers evict entries, so those models feed every position."""
    from transformers import DynamicCache

    return all(type(layer).__name__ == "DynamicLayer" for layer in DynamicCache(config=model.config).layers)


def final_hidden(model: nn.Module, batch) -> torch.Tensor:
    """Last hidden states after the final norm (the base model's output) for a Batch, or a
    StepBatch (which runs its groups with their caches and positions), or anything with
    ``forward_kwargs`` (:class:`ForwardInputs`)."""
    if hasattr(batch, "final_hidden"):
        return batch.final_hidden(model)
    if hasattr(batch, "forward_kwargs"):
        return model.base_model(**batch.forward_kwargs()).last_hidden_state
    out = model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
    return out.last_hidden_state


def logits_at(model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """LM-head logits for selected final hidden states ``[..., d]``, with the model's
    final soft-capping where it has one (Gemma 2/3)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float()
