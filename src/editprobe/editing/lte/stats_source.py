"""Where an LTE editor's corpus statistics come from: C0 per edit layer and the null-space
projectors made from it (AlphaEdit), read from a :class:`CovarianceStore` for the editor's
request (corpus sample, documents, length, dtype, model) and kept for the editor's life.

Statistics describe the unedited model: they are computed before the first batch (or come
with a saved state) and survive ``restore``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ...errors import CorpusShortfallWarning
from ..api import RemoteCheck
from .solvers import NullSpaceInfo, nullspace_projector
from .state import StateError


class StatsSource:
    """C0 and projectors for ``layers`` of ``model``, as ``hp``'s ``mom2_*`` fields ask.
    ``store``: a CovarianceStore (the default one is made on first use when None);
    ``corpus``: a Corpus (None: ``mom2_corpus`` sampled as ``mom2_sample``);
    ``unedited``: whether the model is still unedited (C0 is read only then)."""

    def __init__(self, model, tok, adapter, hp, model_id: str, layers: list[int], store=None, corpus=None,
                 unedited: Callable[[], bool] = lambda: True) -> None:
        self.model, self.tok, self.adapter, self.hp, self.model_id = model, tok, adapter, hp, model_id
        self.layers = list(layers)
        self.store = store
        self.corpus = corpus
        self._unedited = unedited
        self._c0: dict[int, torch.Tensor] = {}
        self._c0_documents: dict[int, int] = {}  # documents the statistics actually read, per layer

    # --- C0 -----------------------------------------------------------------------------------
    def covariance(self, layer: int) -> torch.Tensor:
        """C0 for ``layer`` (mean uncentred second moment of the edited weight's input),
        computed for all edit layers in one pass on first use, on the unedited model."""
        if layer not in self._c0:
            missing = [l for l in self.layers if l not in self._c0]
            if layer not in missing:
                missing.append(layer)
            if not self._unedited():
                raise StateError("covariance statistics must be computed on the unedited model; load or compute "
                                 "them before the first batch")
            got = self.stats_store().get(self.model, self.tok, self.adapter, **self.stats_request(sorted(missing)))
            for l, st in got.items():
                self._c0[l] = st.mean_second_moment().float().cpu()
                self._c0_documents[l] = st.n_docs
            read = min(st.n_docs for st in got.values())
            if read < self.hp.mom2_n_samples:
                # stacklevel 3: the caller of the editor's ``covariance``, which hands on to this one
                warnings.warn(CorpusShortfallWarning(
                    f"C0 corpus {self.c0_info()['corpus']}: {read} documents, fewer than the "
                    f"{self.hp.mom2_n_samples} asked for (mom2_n_samples); the statistics use {read}"), stacklevel=3)
        return self._c0[layer]

    def has_covariance(self, layer: int) -> bool:
        """Whether C0 of ``layer`` is at hand (computed or loaded with a state)."""
        return layer in self._c0

    def c0_corpus(self):
        """The corpus C0 reads: the one given, else ``mom2_corpus`` sampled as ``mom2_sample``."""
        from ...data import load_corpus

        if self.corpus is not None:
            return self.corpus
        return load_corpus(self.hp.mom2_corpus, sample=self.hp.mom2_sample, seed=self.hp.mom2_sample_seed)

    def c0_info(self) -> dict:
        """Which corpus the C0 statistics came from, how its documents were picked and how
        many they read (a corpus shorter than ``mom2_n_samples`` gives fewer)."""
        corpus = self.c0_corpus()
        documents = {str(l): n for l, n in sorted(self._c0_documents.items())}
        return {"corpus": corpus.name, "corpus_identity": corpus.identity, **corpus.sampling(),
                "asked": self.hp.mom2_n_samples, "documents": documents}

    def stats_store(self):
        if self.store is None:
            from .covariance import CovarianceStore

            self.store = CovarianceStore()
        return self.store

    def stats_request(self, layers: list[int]) -> dict:
        """Everything that identifies these statistics (the store's cache key)."""
        corpus = self.c0_corpus()
        n_docs = self.hp.mom2_n_samples
        return dict(
            layers=layers, texts_factory=partial(corpus.texts, n_docs), corpus_id=corpus.identity, n_docs=n_docs,
            max_len=self.hp.mom2_max_len, dtype=getattr(torch, self.hp.mom2_dtype), model_id=self.model_id,
        )

    def remote_requirements(self) -> list[RemoteCheck]:
        """A remote C0 corpus (e.g. ``wikipedia``) whose statistics are not cached yet."""
        corpus = self.c0_corpus()
        if not corpus.remote or self.stats_store().has(self.model, self.tok, **self.stats_request(self.layers)):
            return []
        return [RemoteCheck(f"C0 corpus {corpus.name}", corpus.check_available)]

    # --- projectors ---------------------------------------------------------------------------
    def projector(self, layer: int, threshold: float, mode: str) -> tuple[torch.Tensor, NullSpaceInfo]:
        """The null-space projector of C0 for ``layer``: from the store, which caches it
        beside C0 keyed by threshold and mode; computed here from C0 once the model is edited
        (the store would read the edited model), or when C0 came with a saved state and no
        store is in use (none is made for it)."""
        if not self._unedited() or (layer in self._c0 and self.store is None):
            return nullspace_projector(self.covariance(layer), threshold, mode, layer=layer)
        return self.stats_store().projector(self.model, self.tok, self.adapter, **self.stats_request([layer]),
                                            threshold=threshold, mode=mode)[layer]

    # --- saved states -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        """``c0.<layer>`` for every C0 at hand, for a saved state's ``stats.safetensors``."""
        return {f"c0.{l}": c.contiguous() for l, c in self._c0.items()}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """C0 from a saved state's ``stats.safetensors`` (its other entries are the method's)."""
        self._c0.update({int(k.split(".")[1]): v for k, v in tensors.items() if k.startswith("c0.")})

    def check_saved_corpus(self, directory: Path, meta: dict) -> None:
        """A checkpoint continues only on C0 from the same corpus sample: its earlier batches
        were solved against it. A state saved before the sampling existed read the first
        documents (``wikipedia`` now draws at random by default)."""
        corpus = self.c0_corpus()
        saved = meta.get("c0_corpus")
        if saved == corpus.identity or (saved is None and corpus.sample == "first"):
            return
        was = "another C0 corpus or sample" if saved else f"the first documents of {corpus.name}"
        raise StateError(f"{directory}: its batches were edited with C0 from {was}, this editor reads "
                         f"{corpus.name} ({', '.join(f'{k} {v}' for k, v in corpus.sampling().items())}): finish "
                         "the run with the settings and editprobe version that started it, or start it again")
