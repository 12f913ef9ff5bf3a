"""Checks that run before any model is loaded or any directory created, shared by every
job (``edit``, ``run``, ``demo``, studies): a typo must not cost a model load."""

from __future__ import annotations

from collections.abc import Sequence

from ..data import EditRecord, load_records
from ..data.checks import suspicious_records
from ..data.errors import DataError


def check_datasets(specs: Sequence[str], n: int | None) -> tuple[dict[str, list[EditRecord]], list[str]]:
    """Every record (up to ``n`` per dataset; None: all) of every dataset, and the warnings about them."""
    records: dict[str, list[EditRecord]] = {}
    warnings: list[str] = []
    for spec in specs:
        loaded = load_records(spec, limit=n)
        if not loaded.records:
            raise DataError(loaded.path or spec, "holds no records")
        records[spec] = loaded.records
        warnings += suspicious_records(loaded.records, str(loaded.path or spec))
    return records, warnings


def check_model_and_device(model: str, device: str | None) -> None:
    """The device exists here and the model reference names a loadable model (without
    loading it: a hub id is looked up once, with a short timeout)."""
    from ..models.loading import check_device
    from ..models.reference import resolve_model_reference

    check_device(device)
    resolve_model_reference(model)
    check_cache_writable()


def check_cache_writable() -> None:
    """The statistics and model cache: created now, and writable (jobs write C0 there)."""
    from ..paths import cache_dir, check_writable

    root = cache_dir()
    check_writable(root, option="cache directory (EDITPROBE_CACHE)")


def check_c0_corpus(editor) -> None:
    """After the model is loaded, before any work: a remote C0 corpus (e.g. ``wikipedia``)
    whose statistics are not cached yet must be reachable, else one line says what to do."""
    from ..data import load_corpus

    if not editor.needs_covariance:
        return
    corpus = editor.corpus or load_corpus(editor.hp.mom2_corpus)
    if not getattr(corpus, "remote", False):
        return
    request = editor._stats_request(editor.layers)
    if editor.stats_store().has(editor.model, editor.tok, **request):
        return
    corpus.check_available()
