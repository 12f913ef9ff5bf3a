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
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ..paths import atomic_path, cache_dir
from .targets import TargetOptimizer, TargetResult

FORMAT = 1
# The modules whose code decides the values a target optimization returns.
_CODE = ("editing/targets.py", "editing/layout.py", "editing/prompts.py", "editing/objective.py",
         "editing/negation_terms.py", "models/replay.py", "models/tokens.py", "models/hooks.py")
_PACKAGE = Path(__file__).resolve().parents[1]


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

    def key(self, optimizer: TargetOptimizer, requests, templates: list[str], seed: int | None = None) -> str | None:
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
        return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def load(self, key: str, device) -> TargetResult | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt", device=str(device)) as f:
                meta = json.loads(f.metadata()["result"])
                tensors = {name: f.get_tensor(name) for name in f.keys()}
        except (OSError, ValueError, KeyError, TypeError, SafetensorError):
            return None  # unreadable: compute again (and overwrite)
        z = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("z.")}
        anchor = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("anchor.")}
        return TargetResult(z=z, anchor=anchor, **meta)

    def store(self, key: str, result: TargetResult) -> None:
        tensors = {f"z.{k}": v.detach().contiguous().cpu() for k, v in result.z.items()}
        tensors.update({f"anchor.{k}": v.detach().contiguous().cpu() for k, v in result.anchor.items()})
        meta = {f.name: getattr(result, f.name) for f in dataclasses.fields(TargetResult) if f.name not in ("z", "anchor")}
        path = self.path(key)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"result": json.dumps(meta)})

    def run(self, optimizer: TargetOptimizer, requests, templates: list[str], seed: int | None = None) -> TargetResult:
        """``optimizer.run(requests, templates)``, read from the cache when the same batch
        was computed before on the same model state with the same settings."""
        key = self.key(optimizer, requests, templates, seed)
        if key is None:
            self.stats.skipped += 1
            return optimizer.run(requests, templates)
        cached = self.load(key, optimizer.device)
        if cached is not None:
            self.stats.hits += 1
            self.stats.saved_s += cached.seconds
            return cached
        self.stats.misses += 1
        result = optimizer.run(requests, templates)
        if type(result) is TargetResult:  # a subclass's extra fields would be lost
            self.store(key, result)
        return result


def use_target_cache(editor, enabled: bool = True, root: str | Path | None = None) -> TargetCache | None:
    """Give an editor that optimizes targets a cache (default: the user cache dir's
    ``targets/``); None when disabled or when the editor has no target optimization."""
    if not enabled or not hasattr(editor, "target_cache"):
        return None
    editor.target_cache = TargetCache(root)
    return editor.target_cache
