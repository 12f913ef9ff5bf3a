"""The key second-moment statistic C0 (docs/engine.md, docs/covariance.md).

C0^l = (1/N_tok)·Σ_t k_t k_tᵀ, uncentred, over every non-pad token of a corpus, where k is
the input of layer l's MLP output projection. Its pieces, one concept each:

- stats_types.py: the statistic (``LayerStats``), its accumulation dtypes and ``StatsKey``,
  everything that changes it;
- c0_pass.py: ``accumulate_second_moment``, the one forward pass per batch for all layers;
- stats_store.py: ``CovarianceStore``, the on-disk store (per-layer safetensors + JSON,
  checked on read, locked while computed), with AlphaEdit's projectors;
- fingerprints.py: what identifies a model and a tokenizer in the store's keys.

Every name stays importable from here.
"""

from __future__ import annotations

from .c0_pass import accumulate_second_moment, model_max_positions
from ..fingerprints import model_fingerprint, tokenizer_fingerprint
from .stats_store import CovarianceStore
from .stats_types import ACCUM_DTYPES, LayerStats, StatsKey

__all__ = ["ACCUM_DTYPES", "CovarianceStore", "LayerStats", "StatsKey", "accumulate_second_moment",
           "model_fingerprint", "model_max_positions", "tokenizer_fingerprint"]
