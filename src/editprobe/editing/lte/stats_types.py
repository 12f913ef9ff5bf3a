"""The C0 statistic's types: one layer's accumulated sums (what the pass returns and the
store keeps), the dtypes it may be accumulated in, and the key of everything that changes
it (what a request for statistics names, and what the store files it under)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import torch

ACCUM_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_FORMAT = 1  # bump when the file layout or the statistic's definition changes


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


def _slug(text: str) -> str:
    """A readable, filesystem-safe name plus a short hash, so distinct ids never collide."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:48] or "x"
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class StatsKey:
    """Everything that changes one layer's statistic."""

    model_id: str
    fingerprint: str
    tokenizer: str
    layer: int
    corpus_id: str
    n_docs: int
    max_len: int
    dtype: str
    format: int = _FORMAT

    def directory(self, root: Path) -> Path:
        return root / _slug(self.model_id) / f"{self.fingerprint[:24]}-tok{self.tokenizer}" / _slug(self.corpus_id)

    def stem(self) -> str:
        return f"layer{self.layer}_n{self.n_docs}_len{self.max_len}_{self.dtype}"
