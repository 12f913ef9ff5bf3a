"""Trained hypernetworks in the cache, keyed like the covariance statistics: by the model's
weights (fingerprint), the settings and the training data (file contents, and the data it
was kept disjoint from). ``editprobe train rledit`` puts every network it trains there; a run
whose ``hypernet`` is unset uses the network of the model's default training (its shipped
settings on the built-in ``counterfact-train``) and never trains on its own."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ...paths import cache_dir
from .hypernet import HypernetError, RLEditSettings

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


def default_hypernet(model, model_id: str | None) -> Path:
    """The cached network of the model's default training; one line saying how to train it."""
    from ..covariance import model_fingerprint
    from ..keys_model import hparams_key
    from .hypernet import resolve_settings

    try:
        key_model = hparams_key(model_id or "")
    except Exception:  # noqa: BLE001 - a model without shipped settings: only --set hypernet works
        raise HypernetError(f"rledit needs a trained hypernetwork for {model_id}: train one with `editprobe train "
                            f"rledit --model {model_id} --settings FILE.yaml --data TRAIN.json --out DIR`, then pass "
                            "--set hypernet=DIR/hypernet") from None
    settings = resolve_settings(key_model)
    fingerprint = model_fingerprint(model)
    path = cached_path(fingerprint, training_key(fingerprint, settings, DEFAULT_DATA, DEFAULT_EXCLUDE))
    if not (path / "hypernet.json").is_file():
        raise HypernetError(f"rledit needs a trained hypernetwork: none is cached for {model_id}; train it once with "
                            f"`editprobe train rledit --model {model_id} --out DIR` (it is cached for every later run), "
                            "or pass --set hypernet=DIR/hypernet")
    return path
