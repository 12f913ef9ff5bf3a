"""What an editor owns and how it is written, rolled back, saved, loaded and restored.

Weights are written from an fp32 master: W = (W_original + Σ deltas).to(model dtype), so
sequential edits of a bf16 model do not accumulate rounding error, and a saved state
re-applied to a fresh copy of the model gives bit-identical weights.
"""

from __future__ import annotations

import json
import warnings
from functools import partial
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..jsontext import dumps
from ..paths import atomic_path
from .context import ContextTemplates
from .preserved import PreservedKeys
from ..errors import CorpusShortfallWarning, UserError

# 2: preserved.safetensors holds the keys behind K_p K_pᵀ (and a base after a fold), listed
# in state.json's "preserved"; 1 held the matrices (cp.<layer>), still read.
STATE_VERSION = 2


class StateError(UserError, ValueError):
    pass


def read_state_meta(directory: Path, method: str, versions: tuple[int, ...]) -> dict:
    """``state.json`` of a saved editor state, checked to be ``method``'s in a readable version."""
    try:
        meta = json.loads((directory / "state.json").read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"{directory}: not a {method} editor state ({exc})") from None
    if meta.get("method") != method or meta.get("version") not in versions:
        raise StateError(f"{directory}: state of {meta.get('method')!r} version {meta.get('version')}, "
                         f"not {method} version {' or '.join(map(str, versions))}")
    return meta


class EditorState:
    """The state half of an editor. A subclass (``LTEEditor``) must set what the state
    reads before calling ``EditorState.__init__``: ``model``, ``tok``, ``adapter`` (a
    ModelAdapter), ``hp`` (hyperparameters with the ``mom2_*`` fields), ``model_id`` (the
    statistics' cache key), ``name`` (the method, saved with the state), and provide
    ``layers`` (the edit layers)."""

    name: str
    model: torch.nn.Module
    tok: object
    adapter: object
    hp: object
    model_id: str
    _REQUIRED = ("model", "tok", "adapter", "hp", "model_id", "name")

    @property
    def layers(self) -> list[int]:
        raise NotImplementedError(f"{type(self).__name__} must define the edit layers")

    def __init__(self, stats=None, corpus=None):
        missing = [a for a in self._REQUIRED if not hasattr(self, a)]
        if missing:
            raise TypeError(f"{type(self).__name__}: set {', '.join(missing)} before EditorState.__init__")
        self.stats = stats  # a CovarianceStore (created on first use when None)
        self.corpus = corpus  # a Corpus; None: the hparams' corpus or the built-in sample
        self._templates: ContextTemplates | None = None
        self._c0: dict[int, torch.Tensor] = {}
        self._c0_documents: dict[int, int] = {}  # documents the statistics actually read, per layer
        self._cp = PreservedKeys()  # K_p K_pᵀ per layer and the keys a saved state rebuilds it from
        self._original: dict[int, torch.Tensor] = {}
        self._accum: dict[int, torch.Tensor] = {}
        self._batches = 0
        self._n_edits = 0

    # --- covariance ---------------------------------------------------------------------------
    def covariance(self, layer: int) -> torch.Tensor:
        """C0 for ``layer`` (mean uncentred second moment of the edited weight's input),
        computed for all edit layers in one pass on first use, on the unedited model."""
        if layer not in self._c0:
            missing = [l for l in self.layers if l not in self._c0]
            if layer not in missing:
                missing.append(layer)
            if self._accum:
                raise StateError("covariance statistics must be computed on the unedited model; load or compute "
                                 "them before the first batch")
            got = self.stats_store().get(self.model, self.tok, self.adapter, **self.stats_request(sorted(missing)))
            for l, st in got.items():
                self._c0[l] = st.mean_second_moment().float().cpu()
                self._c0_documents[l] = st.n_docs
            read = min(st.n_docs for st in got.values())
            if read < self.hp.mom2_n_samples:
                warnings.warn(CorpusShortfallWarning(
                    f"C0 corpus {self.c0_info()['corpus']}: {read} documents, fewer than the "
                    f"{self.hp.mom2_n_samples} asked for (mom2_n_samples); the statistics use {read}"), stacklevel=2)
        return self._c0[layer]

    def c0_corpus(self):
        """The corpus C0 reads: the one given, else ``mom2_corpus`` sampled as ``mom2_sample``."""
        from ..data import load_corpus

        if self.corpus is not None:
            return self.corpus
        return load_corpus(self.hp.mom2_corpus, sample=self.hp.mom2_sample, seed=self.hp.mom2_sample_seed)

    def c0_info(self) -> dict:
        """Which corpus the C0 statistics came from, how its documents were picked and how
        many they read (a corpus shorter than ``mom2_n_samples`` gives fewer): recorded with
        every run."""
        corpus = self.c0_corpus()
        documents = {str(l): n for l, n in sorted(self._c0_documents.items())}
        return {"corpus": corpus.name, "corpus_identity": corpus.identity, **corpus.sampling(),
                "asked": self.hp.mom2_n_samples, "documents": documents}

    def stats_store(self):
        if self.stats is None:
            from .covariance import CovarianceStore

            self.stats = CovarianceStore()
        return self.stats

    def stats_request(self, layers: list[int]) -> dict:
        """Everything that identifies this editor's statistics (the store's cache key)."""
        corpus = self.c0_corpus()
        n_docs = self.hp.mom2_n_samples
        return dict(
            layers=layers, texts_factory=partial(corpus.texts, n_docs), corpus_id=corpus.identity, n_docs=n_docs,
            max_len=self.hp.mom2_max_len, dtype=getattr(torch, self.hp.mom2_dtype), model_id=self.model_id,
        )

    # --- writing weights ----------------------------------------------------------------------
    def master_weight(self, layer: int) -> torch.Tensor:
        """The fp32 master of ``layer``'s edited weight, in the stored orientation: original +
        accumulated deltas once the layer was edited, else the model's weight in fp32. Methods
        that look at the current weight read this, so a bf16 model's rounding does not enter."""
        if layer in self._original:
            return self._original[layer] + self._accum[layer]
        return self.adapter.edit_weight(self.model, layer).detach().float()

    def _sync(self, layer: int) -> None:
        """Write the master into the model's weight (in its dtype)."""
        weight = self.adapter.edit_weight(self.model, layer)
        with torch.no_grad():
            weight.copy_(self.master_weight(layer).to(weight.dtype))

    def write(self, layer: int, delta_out_in: torch.Tensor) -> None:
        weight = self.adapter.edit_weight(self.model, layer)
        with torch.no_grad():
            if layer not in self._original:
                self._original[layer] = weight.detach().float().clone()
                self._accum[layer] = torch.zeros_like(self._original[layer])
            self._accum[layer] += self.adapter.to_stored(delta_out_in.float(), weight).to(weight.device)
        self._sync(layer)

    def _snapshot(self) -> dict:
        return {
            "accum": {l: a.clone() for l, a in self._accum.items()},
            # K_p K_pᵀ and its key lists are replaced, never changed in place, so references
            # suffice: a clone would double d_ff² float64 per layer (1.6 GB at d_ff = 14336).
            "cp": self._cp.copy(),
            "original": dict(self._original),
        }

    def _rollback(self, snap: dict) -> None:
        with torch.no_grad():
            for layer, orig in self._original.items():
                weight = self.adapter.edit_weight(self.model, layer)
                accum = snap["accum"].get(layer)
                weight.copy_((orig + accum).to(weight.dtype) if accum is not None else orig.to(weight.dtype))
        self._accum, self._cp = snap["accum"], snap["cp"]
        self._original = {l: o for l, o in self._original.items() if l in snap["original"]}

    def restore(self) -> None:
        """Put the original weights back and forget the edits (templates and C0 are kept)."""
        with torch.no_grad():
            for layer, orig in self._original.items():
                weight = self.adapter.edit_weight(self.model, layer)
                weight.copy_(orig.to(weight.dtype))
        self._original, self._accum, self._cp = {}, {}, PreservedKeys()
        self._batches = self._n_edits = 0

    @property
    def deltas(self) -> dict[int, torch.Tensor]:
        """Accumulated updates per layer, in the stored weight's orientation (fp32)."""
        return dict(self._accum)

    # --- save / load --------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """Templates, hyperparameters, deltas, the keys behind K_p K_pᵀ (or, once they would
        outgrow it, the matrix) and (optionally) C0 and projectors."""
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            meta = {
                "version": STATE_VERSION,
                "method": self.name,
                "model_id": self.model_id,
                "model_type": self.model.config.model_type,
                "hparams": self.hp.model_dump(mode="json"),
                "batches": self._batches,
                "n_edits": self._n_edits,
                "templates": self._templates.model_dump(mode="json") if self._templates else None,
                "extra": self._extra_meta(),
                "preserved": self._cp.meta(),
                "c0_corpus": self.c0_corpus().identity if self.needs_covariance else None,
            }
            (tmp / "state.json").write_text(dumps(meta, directory / "state.json", indent=2))
            save_file({f"delta.{l}": a.contiguous().cpu() for l, a in self._accum.items()}, tmp / "deltas.safetensors")
            save_file(self._cp.tensors(), tmp / "preserved.safetensors")
            extra = self._extra_state() if include_stats else {}
            if include_stats:
                extra.update({f"c0.{l}": c.contiguous() for l, c in self._c0.items()})
            save_file(extra, tmp / "stats.safetensors")
        return directory

    def load_state(self, directory: str | Path) -> None:
        """Re-apply a saved state to this editor's (unedited) model."""
        directory = Path(directory)
        try:
            meta = json.loads((directory / "state.json").read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StateError(f"{directory}: not an editor state ({exc})") from None
        if meta.get("method") != self.name:
            raise StateError(f"{directory}: state of method {meta.get('method')!r}, this editor is {self.name!r}")
        if meta.get("model_type") != self.model.config.model_type:
            raise StateError(f"{directory}: state for a {meta.get('model_type')} model, not {self.model.config.model_type}")
        if meta["hparams"]["layers"] != self.layers:
            raise StateError(f"{directory}: edit layers {meta['hparams']['layers']} differ from {self.layers}")
        if meta.get("version") not in (1, STATE_VERSION):
            raise StateError(f"{directory}: state version {meta.get('version')}, this editprobe reads 1 to "
                             f"{STATE_VERSION}")
        self._check_c0_source(directory, meta)
        preserved = self._read_preserved(directory, meta)
        self.restore()
        self._templates = ContextTemplates.model_validate(meta["templates"]) if meta.get("templates") else None
        deltas = load_file(directory / "deltas.safetensors")
        stats = load_file(directory / "stats.safetensors")
        with torch.no_grad():
            for key, accum in deltas.items():
                layer = int(key.split(".")[1])
                weight = self.adapter.edit_weight(self.model, layer)
                self._original[layer] = weight.detach().float().clone()
                self._accum[layer] = accum.to(weight.device)
                self._sync(layer)
        self._cp = preserved
        self._c0.update({int(k.split(".")[1]): v for k, v in stats.items() if k.startswith("c0.")})
        self._load_extra_state(stats)
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]
        self._load_extra_meta(meta.get("extra") or {})

    def _check_c0_source(self, directory: Path, meta: dict) -> None:
        """A checkpoint continues only on C0 from the same corpus sample: its earlier batches
        were solved against it. A state saved before the sampling existed read the first
        documents (``wikipedia`` now draws at random by default)."""
        if not self.needs_covariance:
            return
        corpus = self.c0_corpus()
        saved = meta.get("c0_corpus")
        if saved == corpus.identity or (saved is None and corpus.sample == "first"):
            return
        was = "another C0 corpus or sample" if saved else f"the first documents of {corpus.name}"
        raise StateError(f"{directory}: its batches were edited with C0 from {was}, this editor reads "
                         f"{corpus.name} ({', '.join(f'{k} {v}' for k, v in corpus.sampling().items())}): finish "
                         "the run with the settings and editprobe version that started it, or start it again")

    @staticmethod
    def _read_preserved(directory: Path, meta: dict) -> PreservedKeys:
        tensors = load_file(directory / "preserved.safetensors")
        if meta["version"] == 1:
            return PreservedKeys.from_matrices({int(k.split(".")[1]): v for k, v in tensors.items()})
        try:
            return PreservedKeys.from_saved(meta["preserved"], tensors)
        except KeyError as exc:
            raise StateError(f"{directory}: preserved keys incomplete, {exc.args[0]} missing") from None

    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Method-specific tensors to save (e.g. AlphaEdit's projectors)."""
        return {}

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def _extra_meta(self) -> dict:
        """Method-specific small JSON state, saved even without stats (e.g. PRUNE's
        "already finalized" mark, which must survive a reload to keep finalize idempotent)."""
        return {}

    def _load_extra_meta(self, meta: dict) -> None:
        pass
