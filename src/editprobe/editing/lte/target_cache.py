"""Target vectors on disk, reused when everything that determines them is the same.

Target optimization is most of an edit batch's time, and it is repeated verbatim across
runs: MEMIT and AlphaEdit (and EMMET, RECT, PRUNE, AdaEdit) share the objective, so on
the same unedited model their first batch's targets are identical. A batch's targets are
determined by the model's current weights, the tokenizer, the requests (in order), the
context templates, the optimizer and its settings, the loss terms and the code that
computes them; the key hashes all of these (docs/target-cache.md). The weights enter
through ``model_fingerprint`` — exact integer row sums of every parameter's bit patterns,
so any changed weight, anywhere in the model, gives another key: targets are never reused
across model states.

A batch is the unit (not a request): a batch's targets are computed jointly, and results
read from the cache are bit-identical to computing them again. Only optimizers and loss
terms that describe themselves (``cache_identity``) are cached; others always compute.

The cache is optional: an entry that cannot be used (truncated, another shape, NaN, a
missing field) is named in one warning and computed again; an entry that cannot be written
(disk full, read-only) is one warning, and the edit goes on with the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import save_file

from ...errors import OutputError
from ...paths import atomic_path, cache_dir
from .cache_entries import (DamagedEntry, check_tensor, expect_number, load_tensors, warn_damaged,
                            warn_unwritten)
from .targets import TargetOptimizer, TargetResult

if TYPE_CHECKING:
    from ..api import Editor

FORMAT = 1
# The modules whose code decides the values a target optimization returns.
_CODE = ("editing/lte/targets.py", "editing/lte/layout.py", "editing/prompts.py", "editing/lte/objective.py",
         "editing/lte/negation_terms.py", "models/resume_forward.py", "models/tokens.py", "models/hooks.py")
_PACKAGE = Path(__file__).resolve().parents[2]


def code_hash() -> str:
    h = hashlib.sha256()
    for rel in _CODE:
        h.update(rel.encode())
        h.update((_PACKAGE / rel).read_bytes())
    return h.hexdigest()


def optimizer_identity(optimizer: TargetOptimizer) -> dict | None:
    """What defines an optimizer's objective, or None when it cannot be described (then its
    results are not cached): a subclass must state its own ``cache_identity``."""
    own = getattr(optimizer, "cache_identity", None)
    if type(optimizer) is not TargetOptimizer and own is None:
        return None
    terms = []
    for term in optimizer.loss_terms:
        identity = getattr(term, "cache_identity", None)
        if identity is None:
            return None
        terms.append({"class": f"{type(term).__module__}.{type(term).__qualname__}", **identity()})
    out = {"class": f"{type(optimizer).__module__}.{type(optimizer).__qualname__}",
           "settings": dataclasses.asdict(optimizer.s), "terms": terms}
    if own is not None:
        out["own"] = own()
    return out


@dataclasses.dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    skipped: int = 0  # batches whose optimizer cannot be cached
    saved_s: float = 0.0  # the computing time of the results that were read instead

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


class TargetCache:
    """A directory of target results, one safetensors file per key. ``stats`` counts what
    this object served."""

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else cache_dir() / "targets"
        self.stats = CacheStats()

    def key(self, optimizer: TargetOptimizer, requests, templates: list[str], seed: int | None = None,
            construction: dict | None = None) -> str | None:
        """``construction``: the editor's non-default target construction (forward replay),
        so its entries and spread's never meet; None keeps spread's keys as they were."""
        from .covariance import model_fingerprint, tokenizer_fingerprint

        identity = optimizer_identity(optimizer)
        if identity is None:
            return None
        param = next(optimizer.model.parameters())
        what = {
            "format": FORMAT, "code": code_hash(), "torch": torch.__version__,
            "device": param.device.type, "dtype": str(param.dtype),
            "model": model_fingerprint(optimizer.model), "tokenizer": tokenizer_fingerprint(optimizer.tok),
            "optimizer": identity, "templates": list(templates), "seed": seed,
            "requests": [r.model_dump(mode="json", exclude={"id"}) for r in requests],
        }
        if construction:
            what["construction"] = construction
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str, device, rows: int | None = None, width: int | None = None,
             kinds: set[str] | None = None) -> TargetResult | None:
        """The entry of ``key``, checked (``rows`` requests, ``width`` = d_model, ``kinds`` of
        sites when given); None when there is none or it is damaged (named in a warning)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            tensors, header = load_tensors(path, str(device))
            return _checked_result(tensors, header, rows, width, kinds)
        except DamagedEntry as exc:
            warn_damaged(path, exc)
            return None

    def store(self, key: str, result: TargetResult) -> None:
        """Write the entry atomically; a failed write is a warning (the cache is optional)."""
        tensors = {f"z.{k}": v.detach().contiguous().cpu() for k, v in result.z.items()}
        tensors.update({f"anchor.{k}": v.detach().contiguous().cpu() for k, v in result.anchor.items()})
        meta = {f.name: getattr(result, f.name) for f in dataclasses.fields(TargetResult) if f.name not in ("z", "anchor", "by_layer")}
        path = self.path(key)
        try:
            with atomic_path(path) as tmp:
                save_file(tensors, str(tmp), metadata={"result": json.dumps(meta)})
        except OutputError as exc:
            warn_unwritten(exc, "the target cache is optional: going on without this entry")

    def run(self, optimizer: TargetOptimizer, requests, templates: list[str], seed: int | None = None,
            construction: dict | None = None) -> TargetResult:
        """``optimizer.run(requests, templates)``, read from the cache when the same batch
        was computed before on the same model state with the same settings."""
        key = self.key(optimizer, requests, templates, seed, construction)
        if key is None:
            self.stats.skipped += 1
            return optimizer.run(requests, templates)
        cached = self.load(key, optimizer.device, rows=len(requests), width=optimizer.adapter.d_model(optimizer.model),
                           kinds={site.kind for site in optimizer.s.sites})
        if cached is not None:
            self.stats.hits += 1
            self.stats.saved_s += cached.seconds
            return cached
        self.stats.misses += 1
        result = optimizer.run(requests, templates)
        if type(result) is TargetResult:  # a subclass's extra fields would be lost
            self.store(key, result)
        return result


_LISTS = ("loss", "nll", "target_prob", "steps", "history")


def _checked_result(tensors: dict, header: dict, rows: int | None, width: int | None,
                    kinds: set[str] | None) -> TargetResult:
    """The TargetResult an entry holds, or DamagedEntry: every field it needs, well typed,
    and every tensor [rows, width] and finite."""
    try:
        meta = json.loads(header["result"])
    except KeyError:
        raise DamagedEntry("no result metadata") from None
    except ValueError as exc:
        raise DamagedEntry(f"corrupt result metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise DamagedEntry("its result metadata is not an object")
    z = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("z.")}
    anchor = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("anchor.")}
    if len(z) + len(anchor) != len(tensors) or not z or not set(z) <= set(anchor):
        raise DamagedEntry(f"holds tensors {sorted(tensors)}, expected z.<site> and anchor.<site> for each site")
    if kinds is not None and set(z) != kinds:
        raise DamagedEntry(f"targets for sites {sorted(z)}, expected {sorted(kinds)}")
    first = next(iter(z.values()))
    shape = (rows if rows is not None else first.shape[0], width if width is not None else first.shape[-1])
    for name, t in tensors.items():
        check_tensor(name, t, shape)
    required = [f.name for f in dataclasses.fields(TargetResult) if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING and f.name not in ("z", "anchor", "by_layer")]
    absent = [name for name in required if name not in meta]
    if absent:
        raise DamagedEntry(f"metadata field {absent[0]!r} is missing")
    for name in _LISTS:
        value = meta.get(name, [])
        if not isinstance(value, list) or not all(isinstance(x, (int, float)) for x in value):
            raise DamagedEntry(f"metadata field {name!r} is not a list of numbers")
    expect_number(meta, "seconds")
    try:
        return TargetResult(z=z, anchor=anchor, **meta)
    except TypeError as exc:
        raise DamagedEntry(f"result metadata does not fit: {exc}") from None


def use_target_cache(editor: Editor, enabled: bool = True, root: str | Path | None = None) -> TargetCache | None:
    """Give an editor that optimizes targets a cache (default: the user cache dir's
    ``targets/``); None when disabled or when the editor has no target optimization
    (``Editor.attach_target_cache`` says which)."""
    if not enabled:
        return None
    cache = TargetCache(root)
    return cache if editor.attach_target_cache(cache) else None
