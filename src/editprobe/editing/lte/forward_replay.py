"""Forward-replay targets (FE; docs/methods/forward-replay.md).

MEMIT optimizes the target z at the last edit layer and spreads z − h over the layers below.
Forward replay (Liu et al., ICML 2026, "From Backward Spreading to Forward Replay",
github:jugechengzi/FE) optimizes it at the *first* edit layer instead; the targets of the
later edit layers are then read from one forward pass of the bare prompt with that
optimized state written over the first layer's output at the edited token (an activation
patch: no weight changes). Each layer is then edited toward its own z_l with the full
residual z_l − h_l.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace

import torch

from ...data.records import EditRequest
from ...models.adapters import ModelAdapter
from ...models.hooks import capture, edit_output, run_until_stop
from ..prompts import batch_rows, chunks, key_rows
from .targets import TargetResult

# What the target cache keys forward replay's optimizations on (target_cache.py): z is then
# optimized at the first edit layer, so spread's entries must never be served to it.
CACHE_CONSTRUCTION = {"targets": "forward-replay"}


class TargetConstruction:
    """How the LTE engine (engine.py, which mixes this in) makes a batch's targets: spread
    (z at the last edit layer) or forward replay (z at the first, the later layers' replayed)."""

    @property
    def target_layer(self) -> int:
        """Where z is optimized: the last edit layer, the first with forward-replay targets."""
        return self.hp.layers[0] if self.hp.targets == "forward-replay" else self.hp.layers[-1]

    def compute_targets(self, requests: list[EditRequest]) -> TargetResult:
        if self.hp.targets != "forward-replay":
            return self.optimized_targets(requests)
        # precomputed: made on the unedited model, as FE's precompute_z.py does, by swapping
        # the original weights in; the same request gives the same targets at any batch
        unedited = self.ledger.originals_written() if self.hp.replay_targets == "precomputed" else nullcontext()
        with unedited:
            result = self.optimized_targets(requests, CACHE_CONSTRUCTION)
            result.by_layer = replayed_targets(self.model, self.tok, self.adapter, requests, result.z["block"],
                                               self.layers, self.hp.locate, self.hp.rows_per_pass)
        return result

    def optimized_targets(self, requests: list[EditRequest], construction: dict | None = None) -> TargetResult:
        """z at ``target_layer`` (from the target cache when it holds this batch)."""
        if self.target_cache is None:
            return self.target_optimizer().run(requests, self.templates().all)
        return self.target_cache.run(self.target_optimizer(), requests, self.templates().all, self.hp.template_seed,
                                     construction)


@torch.no_grad()
def replayed_targets(model, tok, adapter: ModelAdapter, requests: list[EditRequest], z_first: torch.Tensor,
                     layers: list[int], locate: str = "subject", rows_per_pass: int = 128) -> dict[int, torch.Tensor]:
    """Per edit layer, the target ``[n, d]`` (fp32): ``z_first`` at ``layers[0]``; at each
    later layer, its block output at the edited token of the bare prompt when the first
    layer's block output there is replaced by ``z_first`` (the other positions untouched).
    Runs on the model as it is (the caller chooses current or unedited weights)."""
    first, later = layers[0], list(layers[1:])
    out = {first: z_first.float()}
    if not later:
        return out
    device = next(model.parameters()).device
    # Causal attention: tokens after the edited one cannot change what is read there.
    rows = [replace(r, ids=r.ids[: r.subject_index + 1]) for r in key_rows(tok, requests, ["{}"], locate)]
    paths = {adapter.path("block", layer): layer for layer in later}
    got: dict[int, list[torch.Tensor]] = {layer: [] for layer in later}
    patched = model.get_submodule(adapter.path("block", first))
    done = 0
    for chunk in chunks(rows, rows_per_pass):
        rb = batch_rows(tok, chunk, "right")
        b = rb.batch.to(device)
        pos = rb.subject_positions().to(device)
        ar = torch.arange(len(chunk), device=device)
        z = z_first[done: done + len(chunk)].to(device)
        done += len(chunk)

        def patch(h: torch.Tensor, z=z, pos=pos, ar=ar) -> torch.Tensor:
            h = h.clone()
            h[ar, pos] = z.to(h.dtype)
            return h

        with edit_output(patched, patch), capture(model, list(paths), stop_after=adapter.path("block", later[-1])) as seen:
            run_until_stop(lambda: model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False))
        for path, layer in paths.items():
            got[layer].append(seen[path][ar, pos].float())
    out.update({layer: torch.cat(v) for layer, v in got.items()})
    return out
