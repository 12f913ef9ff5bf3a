"""WISE's side memories, their TIES merge, and the router that consults them in the forward.

A side memory is an fp32 copy of one MLP layer's output (value) projection, ``[out, in]``,
trained on a shard of edits. Its activation at a token is the norm of the difference it makes
there, ``Δ = ‖(W_side − W_v) a‖₂`` for the value input ``a`` (Wang et al., 2024, §2.3: the
routing indicator); a memory answers a token when its Δ exceeds its threshold, ``act_ratio``
× the smallest mean Δ any of its edits reached in training. The router decides per token
position, so a query routes the same whatever it is batched, padded or cached with (see
docs/wise.md for why that differs from EasyEdit's one decision per forward call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

NO_EDIT = float("inf")  # the min_act of a memory no edit has reached yet: it never routes


@dataclass(frozen=True)
class SideMemory:
    """One side memory: its weight (fp32, ``[out, in]``), the smallest mean in-scope Δ of
    its edits, how many edits it holds and whether it is a merge of shards."""

    weight: torch.Tensor
    min_act: float = NO_EDIT
    n_edits: int = 0
    merged: bool = False

    def threshold(self, act_ratio: float) -> float:
        return self.min_act * act_ratio


def ties_merge(base: torch.Tensor, shards: list[torch.Tensor], weights: list[float], density: float) -> torch.Tensor:
    """TIES merging (Yadav et al., 2023) of ``shards`` onto ``base``, as WISE merges its
    side memories: each task vector ``τ_i = W_i − base`` keeps its ``density`` largest-magnitude
    entries (trim), is weighted by ``w_i``; each entry's sign is the sign of the weighted sum
    (elect, ties to +); the entries that agree with it are averaged with their weights
    (disjoint merge). All in fp32."""
    if len(shards) != len(weights) or not shards:
        raise ValueError("ties_merge: one weight per shard, at least one shard")
    base = base.float()
    taus = []
    for shard in shards:
        tau = shard.float() - base
        if density < 1:
            k = int(density * tau.numel())
            keep = torch.zeros(tau.numel(), dtype=torch.bool, device=tau.device)
            keep[tau.abs().flatten().topk(k).indices] = True
            tau = tau * keep.view_as(tau)
        taus.append(tau)
    stacked = torch.stack(taus)
    w = torch.tensor(weights, dtype=torch.float32, device=base.device).view(-1, *([1] * base.dim()))
    weighted = stacked * w
    elected = torch.where(weighted.sum(0) >= 0, 1.0, -1.0)
    agree = (weighted.sign() == elected).float()  # a trimmed (zero) entry agrees with neither sign
    divisor = (w * agree).sum(0)
    divisor[divisor == 0] = 1
    return base + (weighted * agree).sum(0) / divisor


class WiseRouter:
    """A forward hook on the edit layer's output projection: every token whose largest Δ
    over the memories exceeds that memory's threshold takes that memory's output, the others
    keep the layer's own (bit for bit). ``last_routes`` holds the last forward's choice per
    token (−1: the main memory), for inspection and tests."""

    def __init__(self, module: nn.Module, main: torch.Tensor, bias: torch.Tensor | None, act_ratio: float):
        self.module, self.main, self.bias, self.act_ratio = module, main, bias, act_ratio
        self.memories: list[SideMemory] = []
        self.last_routes: torch.Tensor | None = None
        self.last_acts: torch.Tensor | None = None  # (memories, *tokens) Δ of the last forward
        self._handle = None

    def set_memories(self, memories: list[SideMemory]) -> None:
        self.memories = [m for m in memories if m.n_edits]
        self._diffs = [m.weight - self.main for m in self.memories]
        self._thresholds = [m.threshold(self.act_ratio) for m in self.memories]
        if self.memories and self._handle is None:
            self._handle = self.module.register_forward_hook(self._hook)

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
        self._handle, self.memories, self.last_routes, self.last_acts = None, [], None, None

    def acts(self, a: torch.Tensor) -> torch.Tensor:
        """Δ of every memory at every token of the value input ``a`` (fp32)."""
        a = a.float()
        return torch.stack([F.linear(a, diff).norm(dim=-1) for diff in self._diffs])

    def routes(self, acts: torch.Tensor) -> torch.Tensor:
        """The memory each token takes: the one with the largest Δ above its threshold, −1 if none."""
        thresholds = torch.tensor(self._thresholds, device=acts.device).view(-1, *([1] * (acts.dim() - 1)))
        above = torch.where(acts > thresholds, acts, torch.full_like(acts, -1.0))
        best, index = above.max(0)
        return torch.where(best >= 0, index, torch.full_like(index, -1))

    @torch.no_grad()
    def _hook(self, _module, args, output):
        if not self.memories:
            return None
        a = args[0]
        acts = self.acts(a)
        routes = self.routes(acts)
        self.last_acts, self.last_routes = acts, routes
        if not (routes >= 0).any():
            return None
        out = output.clone()
        for m, memory in enumerate(self.memories):
            chosen = routes == m
            if chosen.any():
                side = F.linear(a[chosen].float(), memory.weight, None if self.bias is None else self.bias.float())
                out[chosen] = side.to(out.dtype)
        return out
