"""The on-disk store of C0 statistics and AlphaEdit projectors (docs/covariance.md).

One entry per layer under ``$EDITPROBE_CACHE/stats``: a safetensors file and a JSON file,
keyed by everything that changes the statistic, so a stale file is never reused for
another model, corpus or setting. The JSON is written last: its presence marks a complete
entry. Every entry is checked when it is read (cache_entries.py); a damaged one is named
in one warning, computed again and replaced. Both caches are required: a failed write is
the one-line error ``cannot write <file>: <reason>`` (a resumed run reads C0 back).

Two processes that need the same missing entries compute them once: each missing entry is
locked while it is computed (``.NAME.lock`` beside it, removed on release), the locks taken
in sorted order so two requests for overlapping layers cannot deadlock, and after waiting
the entries are read again and only those still missing are computed.
"""

from __future__ import annotations

import json
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch
from safetensors.torch import save_file
from torch import nn

from ...locks import FileLock, wait_note
from ...models.adapters import ModelAdapter
from ...paths import atomic_path, cache_dir, write_json_atomic
from .c0_pass import accumulate_second_moment, model_max_positions
from .cache_entries import (DamagedEntry, blame, check_tensor, expect_int, expect_names, expect_number, load_tensors,
                            read_meta, tensor_header, warn_damaged)
from .corpus_batches import BATCH_ROWS
from ..fingerprints import model_fingerprint, tokenizer_fingerprint
from .solvers import NullSpaceInfo, nullspace_projector
from .stats_types import ACCUM_DTYPES, LayerStats, StatsKey

__all__ = ["CovarianceStore", "StatsKey"]

_HEADER_DTYPES = {"float32": "F32", "float64": "F64"}  # safetensors' names
Check = Callable[[dict], None]  # raises DamagedEntry


def _dtype_name(dtype: torch.dtype | str) -> str:
    name = dtype if isinstance(dtype, str) else str(dtype).removeprefix("torch.")
    if name not in ACCUM_DTYPES:
        raise ValueError(f"accumulation dtype must be float32 or float64, not {dtype}")
    return name


@dataclass(frozen=True)
class Entry:
    """One cache entry's files: ``NAME.safetensors``, ``NAME.json`` and, while it is being
    computed, the lock ``.NAME.lock``."""

    directory: Path
    name: str
    key: dict  # what the JSON's "key" must equal

    @property
    def tensors(self) -> Path:
        return self.directory / f"{self.name}.safetensors"

    @property
    def meta(self) -> Path:
        return self.directory / f"{self.name}.json"

    @property
    def lock(self) -> Path:
        return self.directory / f".{self.name}.lock"


def _read_meta(entry: Entry) -> dict | None:
    """The entry's metadata; None when it has none (never written, or a write stopped before
    its end) or was written in an older format; DamagedEntry when it cannot be used."""
    if not entry.meta.exists():
        return None
    with blame(entry.meta):
        meta = read_meta(entry.meta)
        key = meta.get("key")
        if not isinstance(key, dict):
            raise DamagedEntry("no key in its metadata")
        if key != entry.key:
            if key.get("format") != entry.key.get("format"):
                return None  # an older layout: stale, not damaged
            raise DamagedEntry("its key is not the one its name stands for")
    if not entry.tensors.is_file():
        raise DamagedEntry(f"{entry.tensors.name} is missing", entry.meta)
    return meta


def _read(entry: Entry, check_tensors: Check, check_meta: Check) -> tuple[dict[str, torch.Tensor], dict] | None:
    """The entry's tensors and metadata, each checked; None when missing; DamagedEntry
    (naming the file at fault) when damaged."""
    meta = _read_meta(entry)
    if meta is None:
        return None
    with blame(entry.meta):
        check_meta(meta)
    with blame(entry.tensors):
        tensors, _ = load_tensors(entry.tensors)
        check_tensors(tensors)
    return tensors, meta


def _read_all(entries: dict[int, Entry], check_tensors: Check, check_meta: Check,
              warn: bool) -> dict[int, tuple[dict[str, torch.Tensor], dict]]:
    """The sound entries by layer; damaged ones are left out (``warn``: named in a warning)."""
    found = {}
    for layer, entry in entries.items():
        try:
            hit = _read(entry, check_tensors, check_meta)
        except DamagedEntry as exc:
            if warn:
                warn_damaged(exc.path or entry.tensors, exc)
            continue
        if hit is not None:
            found[layer] = hit
    return found


def _write(entry: Entry, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Replace the entry: its JSON goes first (until the new one is written the entry reads as
    missing, never as old metadata beside new tensors), then the tensors, then the JSON."""
    try:
        entry.meta.unlink(missing_ok=True)
    except OSError:
        pass  # the write below names the file and the reason
    with atomic_path(entry.tensors) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata={"key": json.dumps(meta["key"])})
    write_json_atomic(entry.meta, meta)


@contextmanager
def _computing(entries: Iterable[Entry], what: str) -> Iterator[None]:
    """Hold the compute lock of every entry (sorted: no deadlock), waiting for another
    process that computes one of them."""
    with ExitStack() as stack:
        for entry in sorted(entries, key=lambda e: str(e.lock)):
            name = f"{what} {entry.tensors}"
            stack.enter_context(FileLock(entry.lock, name, blocking=True, on_wait=wait_note(name), remove=True))
        yield


def _mom2_check(d_ff: int, dtype: str) -> Check:
    def check(tensors: dict) -> None:
        expect_names(tensors, {"mom2_sum"})
        check_tensor("mom2_sum", tensors["mom2_sum"], (d_ff, d_ff), ACCUM_DTYPES[dtype])

    return check


def _stats_meta_check(meta: dict) -> None:
    expect_int(meta, "count", 1)
    expect_int(meta, "n_docs_read", 0)


def _projector_checks(d_ff: int, threshold: float, mode: str) -> tuple[Check, Check]:
    def tensors_check(tensors: dict) -> None:
        expect_names(tensors, {"P"})
        check_tensor("P", tensors["P"], (d_ff, d_ff), torch.float32)

    def meta_check(meta: dict) -> None:
        info = meta.get("info")
        try:
            loaded = NullSpaceInfo(**info)  # type: ignore[arg-type]
        except TypeError:
            raise DamagedEntry(f"metadata field 'info' is {info!r}, not a null-space description") from None
        expect_int(info, "dim", 0)
        expect_number(info, "energy_fraction")
        if loaded.dim > d_ff or (loaded.threshold, loaded.mode) != (float(threshold), mode):
            raise DamagedEntry(f"metadata field 'info' is {info!r}, not this projector's")

    return tensors_check, meta_check


class CovarianceStore:
    """Per-layer C0 statistics (and AlphaEdit projectors) cached under ``root``.

    Missing layers of one request are computed together in a single pass over the corpus;
    cached ones are read without running the model.
    """

    def __init__(self, root: str | Path | None = None, progress: bool = True) -> None:
        self.root = Path(root) if root is not None else cache_dir() / "stats"
        self.progress = progress

    def _keys(self, model, tokenizer, layers, corpus_id, n_docs, max_len, dtype, model_id) -> dict[int, StatsKey]:
        cap = model_max_positions(model)
        max_len = min(max_len, cap) if cap else max_len
        name = model_id or str(getattr(model.config, "_name_or_path", "") or "").rstrip("/").split("/")[-1]
        name = name or model.config.model_type
        fingerprint, tok_hash = model_fingerprint(model), tokenizer_fingerprint(tokenizer)[:16]
        return {
            layer: StatsKey(name, fingerprint, tok_hash, layer, corpus_id, n_docs, max_len, _dtype_name(dtype))
            for layer in sorted(set(layers))
        }

    def _stats_entry(self, key: StatsKey) -> Entry:
        return Entry(key.directory(self.root), f"mom2_{key.stem()}", asdict(key))

    def _projector_entry(self, key: StatsKey, threshold: float, mode: str) -> Entry:
        return Entry(key.directory(self.root), f"proj_{key.stem()}_{mode}_{threshold!r}",
                     dict(asdict(key), threshold=float(threshold), mode=mode))

    def has(self, model: nn.Module, tokenizer, layers: Iterable[int], corpus_id: str, n_docs: int = 10000,
            max_len: int = 1024, dtype: torch.dtype = torch.float32, model_id: str | None = None, **_: object) -> bool:
        """Whether the statistics of every layer are cached and look sound: metadata and the
        tensor file's header are read, not the data (``get`` still checks the values)."""
        keys = self._keys(model, tokenizer, layers, corpus_id, n_docs, max_len, dtype, model_id)
        for key in keys.values():
            entry = self._stats_entry(key)
            try:
                meta = _read_meta(entry)
                if meta is None:
                    return False
                _stats_meta_check(meta)
                shape, dtype_name = tensor_header(entry.tensors).get("mom2_sum", ([], ""))
                if len(shape) != 2 or shape[0] != shape[1] or dtype_name != _HEADER_DTYPES[key.dtype]:
                    return False
            except DamagedEntry:
                return False
        return True

    def get(
        self,
        model: nn.Module,
        tokenizer,
        adapter: ModelAdapter,
        layers: Iterable[int],
        texts_factory: Callable[[], Iterable[str]],
        corpus_id: str,
        n_docs: int = 10000,
        max_len: int = 1024,
        dtype: torch.dtype = torch.float32,
        batch_size: int = BATCH_ROWS,
        model_id: str | None = None,
    ) -> dict[int, LayerStats]:
        """Statistics for ``layers``; ``texts_factory()`` is called only if some are missing."""
        keys = self._keys(model, tokenizer, layers, corpus_id, n_docs, max_len, dtype, model_id)
        entries = {layer: self._stats_entry(key) for layer, key in keys.items()}
        check = _mom2_check(adapter.d_ff(model), _dtype_name(dtype))

        def read(layers: list[int], warn: bool) -> dict[int, LayerStats]:
            got = _read_all({l: entries[l] for l in layers}, check, _stats_meta_check, warn)
            return {l: LayerStats(l, tensors["mom2_sum"], meta["count"], meta["n_docs_read"])
                    for l, (tensors, meta) in got.items()}

        found = read(list(keys), warn=False)  # damaged entries are named below, under their lock
        missing = [layer for layer in keys if layer not in found]
        if missing:
            with _computing([entries[l] for l in missing], "the C0 statistics"):
                found.update(read(missing, warn=True))  # computed by another process while we waited?
                still = [layer for layer in missing if layer not in found]
                if still:
                    found.update(self._compute(model, tokenizer, adapter, {l: keys[l] for l in still},
                                               texts_factory, n_docs, batch_size))
        return {layer: found[layer] for layer in keys}

    def _compute(self, model, tokenizer, adapter, keys: dict[int, StatsKey], texts_factory, n_docs: int,
                 batch_size: int) -> dict[int, LayerStats]:
        """One pass over the corpus for all of ``keys``' layers; each entry written as it is."""
        layers = sorted(keys)
        first = keys[layers[0]]
        start = time.perf_counter()
        computed = accumulate_second_moment(
            model, tokenizer, adapter, layers, texts_factory(), n_docs=n_docs, max_len=first.max_len,
            dtype=ACCUM_DTYPES[first.dtype], batch_size=batch_size, progress=self.progress,
        )
        seconds = time.perf_counter() - start
        for layer, stats in computed.items():
            meta = dict(key=asdict(keys[layer]), count=stats.count, n_docs_read=stats.n_docs,
                        seconds=round(seconds, 3), layers_in_pass=layers)
            _write(self._stats_entry(keys[layer]), {"mom2_sum": stats.mom2_sum}, meta)
        return computed

    def projector(
        self,
        model: nn.Module,
        tokenizer,
        adapter: ModelAdapter,
        layers: Iterable[int],
        texts_factory: Callable[[], Iterable[str]],
        corpus_id: str,
        threshold: float = 2e-2,
        mode: str = "absolute",
        n_docs: int = 10000,
        max_len: int = 1024,
        dtype: torch.dtype = torch.float32,
        batch_size: int = BATCH_ROWS,
        model_id: str | None = None,
    ) -> dict[int, tuple[torch.Tensor, NullSpaceInfo]]:
        """AlphaEdit's null-space projector of each layer's C0, cached beside the statistics
        (the key adds threshold and mode); statistics are fetched only for missing layers."""
        keys = self._keys(model, tokenizer, layers, corpus_id, n_docs, max_len, dtype, model_id)
        entries = {layer: self._projector_entry(key, threshold, mode) for layer, key in keys.items()}
        checks = _projector_checks(adapter.d_ff(model), threshold, mode)

        def read(layers: list[int], warn: bool) -> dict[int, tuple[torch.Tensor, NullSpaceInfo]]:
            got = _read_all({l: entries[l] for l in layers}, *checks, warn)
            return {l: (tensors["P"], NullSpaceInfo(**meta["info"])) for l, (tensors, meta) in got.items()}

        out = read(list(keys), warn=False)
        missing = [layer for layer in keys if layer not in out]
        if missing:
            # Projector locks before statistics locks (get, below), always: no deadlock.
            with _computing([entries[l] for l in missing], "the AlphaEdit projector"):
                out.update(read(missing, warn=True))
                still = [layer for layer in missing if layer not in out]
                if still:
                    stats = self.get(model, tokenizer, adapter, still, texts_factory, corpus_id, n_docs=n_docs,
                                     max_len=max_len, dtype=dtype, batch_size=batch_size, model_id=model_id)
                    for layer in still:
                        P, info = nullspace_projector(stats[layer].mean_second_moment(), threshold, mode, layer=layer)
                        _write(entries[layer], {"P": P}, dict(key=entries[layer].key, info=asdict(info)))
                        out[layer] = (P, info)
        return {layer: out[layer] for layer in keys}
