"""The weight ledger: the fp32 master of every weight an editor changes.

An editor that writes weights (the LTE methods, FT, RLEdit) never changes them in place: it
tells its ledger, which keeps each edited weight's original (fp32, taken at its first edit)
and the update accumulated since (fp32, in the weight's stored orientation), and writes
``W = (original + accumulated).to(W.dtype)``. Sequential edits of a bf16 model therefore do
not accumulate rounding, rollback and restore are exact, and a saved ledger re-applied to a
fresh copy of the model gives bit-identical weights.

Keys are what the editor names its weights by: the edit layer (LTE, FT) or the module path
(RLEdit); ``weight_of(key)`` finds the live parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import torch

K = TypeVar("K", bound=Hashable)


@dataclass(frozen=True)
class LedgerSnapshot(Generic[K]):
    """What :meth:`WeightLedger.rollback` returns to. It shares the ledger's tensors: the
    ledger replaces them, never changes them in place."""

    originals: Mapping[K, torch.Tensor]
    accumulated: Mapping[K, torch.Tensor]


class WeightLedger(Generic[K]):
    """Original and accumulated update (both fp32) of every edited weight, written as
    ``(original + accumulated).to(W.dtype)``. Accumulated tensors are replaced, never
    changed in place, so a snapshot or a ``deltas`` mapping keeps the values it was taken with;
    none of them carries gradient history."""

    def __init__(self, weight_of: Callable[[K], torch.Tensor]) -> None:
        self._weight_of = weight_of
        self._original: dict[K, torch.Tensor] = {}
        self._accum: dict[K, torch.Tensor] = {}

    # --- reading ------------------------------------------------------------------------------
    def __contains__(self, key: K) -> bool:
        return key in self._accum

    def __len__(self) -> int:
        return len(self._accum)

    def is_empty(self) -> bool:
        """Whether nothing is edited: the model's weights are the originals."""
        return not self._accum

    def edited(self) -> list[K]:
        """The keys edited so far, in the order of their first edit."""
        return list(self._accum)

    @property
    def deltas(self) -> dict[K, torch.Tensor]:
        """The accumulated update per edited key (fp32, stored orientation); a new dict of
        the ledger's tensors, which later edits replace rather than change."""
        return dict(self._accum)

    def original(self, key: K) -> torch.Tensor:
        """The weight before any edit, in fp32: kept since the key's first edit, else read
        from the (unedited) model as a new tensor."""
        if key in self._original:
            return self._original[key]
        return self._live_fp32(key)

    def master(self, key: K) -> torch.Tensor:
        """The fp32 master, a new tensor: original + accumulated, or the live weight in fp32
        for a key never edited. Read it, not the model's weight, where a model's rounding
        must stay out."""
        if key in self._original:
            return self._original[key] + self._accum[key]
        return self._live_fp32(key)

    # --- editing ------------------------------------------------------------------------------
    @torch.no_grad()
    def add(self, key: K, delta_stored: torch.Tensor) -> None:
        """Accumulate ``delta_stored`` (the weight's stored orientation), then write."""
        accum = self._start(key)
        self._accum[key] = accum + delta_stored.to(device=accum.device, dtype=torch.float32)
        self._write(key)

    @torch.no_grad()
    def replace(self, key: K, weight_fp32: torch.Tensor) -> None:
        """Make ``weight_fp32`` the master (accumulated := weight − original), then write
        (FT, which trains the weights themselves)."""
        self._start(key)
        original = self._original[key]
        self._accum[key] = weight_fp32.to(device=original.device, dtype=torch.float32) - original
        self._write(key)

    @torch.no_grad()
    def set_delta(self, key: K, accumulated: torch.Tensor) -> None:
        """Replace an edited key's accumulated update (PRUNE's restraint), then write."""
        if key not in self._accum:
            raise KeyError(f"{key!r} was never edited")
        self._accum[key] = accumulated.to(device=self._accum[key].device, dtype=torch.float32)
        self._write(key)

    def _start(self, key: K) -> torch.Tensor:
        """The accumulated update of ``key``, zeros with the original kept at a first edit."""
        if key not in self._original:
            self._original[key] = self._live_fp32(key)
            self._accum[key] = torch.zeros_like(self._original[key])
        return self._accum[key]

    def _live_fp32(self, key: K) -> torch.Tensor:
        return self._weight_of(key).detach().to(torch.float32, copy=True)

    @torch.no_grad()
    def _write(self, key: K, accumulated: torch.Tensor | None = None) -> None:
        weight, original = self._weight_of(key), self._original[key]
        accum = self._accum[key] if accumulated is None else accumulated
        weight.copy_((original + accum).to(weight.dtype))

    # --- undoing ------------------------------------------------------------------------------
    def snapshot(self) -> LedgerSnapshot[K]:
        return LedgerSnapshot(dict(self._original), dict(self._accum))

    @torch.no_grad()
    def rollback(self, snapshot: LedgerSnapshot[K]) -> None:
        """Back to ``snapshot``: its weights written again, keys first edited since restored."""
        for key, original in self._original.items():
            if key in snapshot.accumulated:
                self._write(key, snapshot.accumulated[key])
            else:
                weight = self._weight_of(key)
                weight.copy_(original.to(weight.dtype))
        self._original, self._accum = dict(snapshot.originals), dict(snapshot.accumulated)

    @torch.no_grad()
    def restore(self) -> None:
        """The original weights back into the model; the ledger is emptied."""
        for key, original in self._original.items():
            weight = self._weight_of(key)
            weight.copy_(original.to(weight.dtype))
        self._original, self._accum = {}, {}

    @contextmanager
    def originals_written(self) -> Iterator[None]:
        """The original weights in the model while the context is open, the edited ones
        written back however it ends; the ledger itself is unchanged (forward-replay targets
        made on the unedited model)."""
        with torch.no_grad():
            for key, original in self._original.items():
                weight = self._weight_of(key)
                weight.copy_(original.to(weight.dtype))
        try:
            yield
        finally:
            with torch.no_grad():
                for key in self._original:
                    self._write(key)

    # --- saving -------------------------------------------------------------------------------
    def tensors(self, prefix: str = "delta.") -> dict[str, torch.Tensor]:
        """``{prefix}{key}``: the accumulated updates on the CPU, for safetensors."""
        return {f"{prefix}{key}": a.contiguous().cpu() for key, a in self._accum.items()}

    @torch.no_grad()
    def load(self, tensors: Mapping[str, torch.Tensor], key_of: Callable[[str], K], prefix: str = "delta.") -> None:
        """Re-apply saved updates (what :meth:`tensors` gave) to the unedited model: the
        ledger is restored first, then each ``{prefix}{name}`` is the update of
        ``key_of(name)``, its original read from the model."""
        self.restore()
        for name, accum in tensors.items():
            key = key_of(name.removeprefix(prefix))
            self._original[key] = self._live_fp32(key)
            self._accum[key] = accum.to(device=self._original[key].device, dtype=torch.float32)
            self._write(key)
