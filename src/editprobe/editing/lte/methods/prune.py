"""PRUNE (docs/methods/prune.md): MEMIT whose edit has its large singular values restrained,
so sequential edits cannot blow up the edited matrix's condition number.

With ξ the reference singular value, each singular value σ of the update is mapped by

    σ' = ξ + log_α(σ) − log_α(ξ)   if σ exceeds ξ   (``log``: α = e; ``log2``, ``log1_5``,
    σ' = (σ + ξ) / 2                                   ``log1_2``: α = 2, 1.5, 1.2;
    σ' = σ                           otherwise          ``linear``: the middle line)

and only the first rank(Δ) components are kept (rank: σ > max(shape)·eps·σ_1).

Where and against what (``prune_apply_at``):

- ``final`` (default; AE-repo ``MEMIT_prune``, ENC, PRUNE-repo's official usage): once,
  after all edits, on the accumulated edit Δ_acc = W_n − W_0 with ξ = σ_max(W_0) and a
  strict ``>``. This needs an explicit ``editor.finalize()`` before evaluating: ``apply``
  never restrains. ``finalize`` is idempotent — a second call without new batches does
  nothing (the mark is saved with the state) — and edits made after it are restrained,
  together with what is already there, by the next ``finalize``.
- ``per_batch`` (FE ``prune_norm``): every layer update of every batch, with ξ = σ_max of
  the current (already edited) W and ``>=``. ``finalize`` then does nothing.

Default base α: e (``log``), as in AE-repo; the PRUNE-repo class default is ``log1_2``.
(short names of source repositories: docs/glossary.md.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from .memit import MEMITEditor, MEMITHParams
from ...plugins import register_method

_BASES = {"log": math.e, "log2": 2.0, "log1_5": 1.5, "log1_2": 1.2}


class PRUNEHParams(MEMITHParams):
    method: str = "prune"
    prune_apply_at: Literal["final", "per_batch"] = "final"
    prune_reduce: Literal["log", "log2", "log1_5", "log1_2", "linear"] = "log"


def restrain(sigma: torch.Tensor, xi: float, reduce: str = "log", strict: bool = True) -> torch.Tensor:
    """PRUNE's map of singular values exceeding ξ (``strict``: σ > ξ, else σ ≥ ξ)."""
    over = sigma > xi if strict else sigma >= xi
    if reduce == "linear":
        shrunk = (sigma + xi) / 2
    elif reduce in _BASES:
        base = math.log(_BASES[reduce])
        shrunk = xi + (torch.log(sigma.clamp(min=1e-30)) - math.log(xi)) / base
    else:
        raise ValueError(f"prune_reduce must be one of {', '.join([*_BASES, 'linear'])}, not {reduce!r}")
    return torch.where(over, shrunk, sigma)


@dataclass(frozen=True)
class PruneInfo:
    """What one restraint did: ξ, the largest singular value before and after, how many
    values were restrained and the update's numerical rank."""

    xi: float
    sigma_max_before: float
    sigma_max_after: float
    n_restrained: int
    rank: int


def prune_update(delta: torch.Tensor, xi: float, reduce: str = "log", strict: bool = True
                 ) -> tuple[torch.Tensor, PruneInfo]:
    """U_r diag(σ'_r) V_rᵀ of ``delta`` (any orientation; singular values are the same)."""
    work = delta.double()  # the SVD of an edit with a wide spectrum: fp64 costs little here
    U, S, Vh = torch.linalg.svd(work, full_matrices=False)
    if S.numel() == 0 or float(S[0]) == 0.0:
        return delta.clone(), PruneInfo(xi, 0.0, 0.0, 0, 0)
    tol = max(delta.shape) * torch.finfo(delta.dtype).eps * S[0]
    rank = int((S > tol).sum())
    S2 = restrain(S[:rank], xi, reduce, strict)
    out = (U[:, :rank] * S2) @ Vh[:rank]
    over = int((S[:rank] > xi).sum() if strict else (S[:rank] >= xi).sum())
    info = PruneInfo(xi, float(S[0]), float(S2.max()), over, rank)
    return out.to(delta.dtype), info


def sigma_max(matrix: torch.Tensor) -> float:
    return float(torch.linalg.matrix_norm(matrix.double(), ord=2))


@register_method
class PRUNEEditor(MEMITEditor):
    name = "prune"
    hparams_cls = PRUNEHParams

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._finalized_at: int | None = None  # the batch count the last finalize saw
        self.prune_info: dict[int, PruneInfo] = {}

    def postprocess(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        if self.hp.prune_apply_at != "per_batch":
            return delta
        out, self.prune_info[layer] = prune_update(delta, sigma_max(self.master_weight(layer)), self.hp.prune_reduce,
                                                   strict=False)
        return out

    @property
    def has_final_step(self) -> bool:
        return self.hp.prune_apply_at == "final"

    @property
    def finalized(self) -> bool:
        return self._finalized_at is not None and self._finalized_at == self._batches

    def finalize(self) -> dict[int, PruneInfo]:
        """Restrain the accumulated edit of every layer (``final`` mode). Idempotent; a no-op
        in ``per_batch`` mode or before any edit. Returns what it did per layer."""
        if self.hp.prune_apply_at != "final" or self.finalized or self.ledger.is_empty():
            return {}
        new, infos = {}, {}
        for layer, accum in self.ledger.deltas.items():  # compute everything first: all or nothing
            new[layer], infos[layer] = prune_update(accum, sigma_max(self.ledger.original(layer)),
                                                    self.hp.prune_reduce, strict=True)
        for layer, accum in new.items():
            self.ledger.set_delta(layer, accum)
        self._finalized_at = self._batches
        self.prune_info = infos
        return infos

    def restore(self) -> None:
        super().restore()
        self._finalized_at = None

    def _extra_meta(self) -> dict:
        return {"prune_finalized_at": self._finalized_at}

    def _load_extra_meta(self, meta: dict) -> None:
        self._finalized_at = meta.get("prune_finalized_at")
