"""Trained hypernetworks in the cache, keyed like the covariance statistics: by the model's
weights (fingerprint), the settings (``grad_handling`` included: a network trained under
another gradient handling is another entry) and the training data (file contents, and the
data it was kept disjoint from). ``editprobe train rledit`` puts every network it trains there; a run
whose ``hypernet`` is unset uses the network of the model's default training (its shipped
settings on the built-in ``counterfact-train``) and never trains on its own.

The cached copy is optional (the training's ``OUT/hypernet`` is the result): a copy that
cannot be written is a warning; a damaged one is replaced by the next training of the same
key (with a warning), and a run that finds one says so and how to train it again."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...errors import OutputError
from ...paths import cache_dir
from ..lte.cache_entries import warn_damaged, warn_unwritten
from .hypernet import Hypernetwork, HypernetError, RLEditSettings

DEFAULT_DATA = ("counterfact-train",)
DEFAULT_EXCLUDE = ("counterfact-sample", "zsre-sample")


def _file_digest(spec: str) -> str:
    from ...data import resolve_data

    return hashlib.sha256(resolve_data(spec).read_bytes()).hexdigest()


def training_key(fingerprint: str, settings: RLEditSettings, data: tuple[str, ...], exclude: tuple[str, ...]) -> str:
    what = {"model": fingerprint, "settings": settings.model_dump(mode="json"),
            "data": [_file_digest(d) for d in data], "exclude": sorted(_file_digest(d) for d in exclude)}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:24]


def cached_path(fingerprint: str, key: str) -> Path:
    return cache_dir() / "rledit" / fingerprint[:24] / key


def _load_cached(path: Path, settings: RLEditSettings) -> tuple[Hypernetwork | None, str | None]:
    """(the cached network, None), (None, why it is damaged), or (None, None) when absent."""
    if not path.exists():
        return None, None
    try:
        net, _ = Hypernetwork.load(path)
    except HypernetError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    if net.settings != settings:
        return None, "its settings are not the ones its key stands for"
    return net, None


def cache_copy(net: Hypernetwork, path: Path, meta: dict, trained: Path) -> bool:
    """Put a trained network in the cache at ``path`` unless a sound copy is there (a
    damaged one is named in a warning and replaced); False, with a warning, when it cannot
    be written: the cache is optional, the network is in ``trained``."""
    cached, damage = _load_cached(path, net.settings)
    if cached is not None:
        return True
    if damage is not None:
        warn_damaged(path, damage, "replacing it with this training's network")
    try:
        net.save(path, meta=meta)
    except OutputError as exc:
        warn_unwritten(exc, f"the cached copy is optional: the network is in {trained}, pass --set "
                            f"hypernet={trained} to use it")
        return False
    return True


def default_hypernet(model, model_id: str | None) -> Hypernetwork:
    """The cached network of the model's default training; one line saying how to train it."""
    from ..lte.covariance import model_fingerprint
    from ..settings.model_keys import hparams_key
    from .hypernet import resolve_settings

    try:
        key_model = hparams_key(model_id or "")
    except Exception:  # noqa: BLE001 - a model without shipped settings: only --set hypernet works
        raise HypernetError(f"rledit needs a trained hypernetwork for {model_id}: train one with `editprobe train "
                            f"rledit --model {model_id} --hparams FILE.yaml --data TRAIN.json --out DIR`, then pass "
                            "--set hypernet=DIR/hypernet") from None
    settings = resolve_settings(key_model)
    fingerprint = model_fingerprint(model)
    path = cached_path(fingerprint, training_key(fingerprint, settings, DEFAULT_DATA, DEFAULT_EXCLUDE))
    net, damage = _load_cached(path, settings)
    if damage is not None:
        raise HypernetError(f"rledit needs a trained hypernetwork: the one cached for {model_id} is damaged "
                            f"({path}: {damage}); train it again with `editprobe train rledit --model {model_id} "
                            "--out DIR` (that replaces it), or pass --set hypernet=DIR/hypernet")
    if net is None:
        raise HypernetError(f"rledit needs a trained hypernetwork: none is cached for {model_id}; train it once with "
                            f"`editprobe train rledit --model {model_id} --out DIR` (it is cached for every later run), "
                            "or pass --set hypernet=DIR/hypernet")
    return net
