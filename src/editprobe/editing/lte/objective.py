"""The typed pieces of the target objective: what each optimization step knows
(``StepContext``), what the objective returns (``LossTerms``), and the ``LossTerm``
protocol through which a method adds a term without subclassing ``TargetOptimizer``.

A loss term returns one value per active request; the optimizer adds ``factor · value`` to
the request's loss (after the engine's NLL, KL and weight decay) and records the value.
See docs/engine-extension.md.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from ...data.records import EditRequest
from ..prompts import Row

if TYPE_CHECKING:
    from .layout import StepBatch


@dataclass
class StepContext:
    """What the plain (δ = 0) pass found, shared by every step of one target search.

    Per-request tensors are indexed by the request's position in the batch; per-row tensors
    by the row's index in ``layout`` (the full row set; steps may run fewer rows, see
    ``live_rows``)."""

    model: torch.nn.Module
    requests: list[EditRequest]
    templates: list[str]  # the context templates the rows were built from
    layout: "StepBatch"  # every row, as the first (plain) pass ran it
    anchor: dict[str, torch.Tensor]  # site kind -> [n, d]: the value before optimization (first row's)
    first_row: torch.Tensor  # [n]: each request's first row (its bare rewriting prompt)
    row_values: dict[str, torch.Tensor]  # site kind -> [rows, d]: the value at every row's edited token
    reference: dict[str, torch.Tensor]  # clamp reference kind -> [n, d] (Site.clamp_to)
    kl_p0: torch.Tensor  # [n, vocab]: log P_0 at each request's KL row (zeros without one)
    # Layout indices of the rows the current step runs (finished requests' rows leave).
    live_rows: torch.Tensor | None = None

    @property
    def n_requests(self) -> int:
        return len(self.requests)

    @property
    def rows(self) -> list[Row]:
        return self.layout.rows


@dataclass
class LossTerms:
    """Per-active-request terms of one step (tensors of length ``len(active)``).

    loss = nll_factor · nll_weight · nll + kl_factor · kl + weight decay + extra"""

    nll: torch.Tensor
    kl: torch.Tensor
    top1: torch.Tensor  # bool: every target token of every rewriting row is the argmax
    nll_weight: torch.Tensor | float = 1.0  # a per-request factor a method may set (PMET's adaptive NLL)
    stop: torch.Tensor | None = None  # bool: a method's own stopping rule (PMET)
    hold: torch.Tensor | None = None  # bool: requests that must not stop yet (a loss term's rule)
    extra: torch.Tensor | None = None  # summed loss terms, factors applied
    values: dict[str, torch.Tensor] = field(default_factory=dict)  # diagnostics and each term's value

    def add(self, name: str, value: torch.Tensor, factor: float = 1.0) -> None:
        """Record ``value`` under ``name`` and add ``factor · value`` to ``extra``."""
        self.values[name] = value
        weighted = factor * value
        self.extra = weighted if self.extra is None else self.extra + weighted

    def hold_where(self, mask: torch.Tensor) -> None:
        self.hold = mask if self.hold is None else self.hold | mask


@runtime_checkable
class LossTerm(Protocol):
    """An extra objective for target optimization.

    ``prepare`` runs once, after the plain pass (``hidden0``: final hidden states of every
    layout row without δ); ``__call__`` runs every step and returns one value per active
    request (differentiable through ``hidden``). Optional members, looked up with
    ``getattr``: ``rows(tok, requests, templates, locate) -> list[Row]`` (rows the term
    needs in every step; their ``kind`` must not be "rewrite" or "kl", so the target's own
    NLL, top-1 and KL ignore them), ``forward_hooks(model) -> list[context managers]``
    (entered around every step's forward), and ``hold(value) -> bool tensor`` (requests
    that must not stop yet)."""

    name: str
    factor: float

    def prepare(self, layout: "StepBatch", hidden0: torch.Tensor, ctx: StepContext) -> None: ...

    def __call__(self, rb: "StepBatch", hidden: torch.Tensor, active: torch.Tensor, ctx: StepContext
                 ) -> torch.Tensor: ...


class BaseLossTerm:
    """Defaults for the optional parts of ``LossTerm``."""

    name = "term"
    factor = 1.0

    def rows(self, tok, requests: list[EditRequest], templates: list[str], locate: str) -> list[Row]:
        return []

    def prepare(self, layout: "StepBatch", hidden0: torch.Tensor, ctx: StepContext) -> None:
        pass

    def forward_hooks(self, model) -> list[AbstractContextManager]:
        return []

    def hold(self, value: torch.Tensor) -> torch.Tensor | None:
        return None


def per_request_sums(values: torch.Tensor, request: torch.Tensor, n: int, counts: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of ``values`` per request and how many entries each got (``counts``: each
    entry's count, default 1)."""
    request = request.to(values.device)
    total = torch.zeros(n, device=values.device).index_add(0, request, values)
    ones = torch.ones_like(values) if counts is None else counts
    count = torch.zeros(n, device=values.device).index_add(0, request, ones)
    return total, count


def per_request_mean(values: torch.Tensor, request: torch.Tensor, n: int, counts: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Mean of ``values`` per request (0 for a request without entries)."""
    total, count = per_request_sums(values, request, n, counts)
    return total / count.clamp(min=1)


def local_index(active: torch.Tensor) -> dict[int, int]:
    """Request index in the batch -> its position among the active requests."""
    return {int(r): i for i, r in enumerate(active.tolist())}
