"""Checks that run before any model is loaded or any directory created, shared by every
job (``edit``, ``run``, ``demo``, studies): a typo must not cost a model load."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from ..data import EditRecord, load_records
from ..data.checks import suspicious_records
from ..data.errors import BadRecord, DataError
from ..data.loading import OnBadRecord, ReadEntries
from ..data.options import DatasetOptions

if TYPE_CHECKING:
    from ..editing.api import RemoteCheck
    from .lengths import Overlong, PromptLengths


def check_datasets(specs: Sequence[str], n: int | None, lengths: PromptLengths | None = None,
                   on_bad_record: OnBadRecord = "error", options: DatasetOptions | None = None,
                   read: ReadEntries | None = None) -> tuple[dict[str, list[EditRecord]], list[str]]:
    """Every record (up to ``n`` entries per dataset; None: all) of every dataset, and the
    warnings about them. ``lengths``: each record's queries within the model's token cap.
    ``on_bad_record="skip"``: a malformed or over-long record is left out (the next ones
    fill its place up to ``n``) and counted in one warning line per dataset. ``options``: how
    the records are read (e.g. zsRE's target); ``read``: how a file is parsed (data/loading.py)."""
    records: dict[str, list[EditRecord]] = {}
    warnings: list[str] = lengths.setup() if lengths is not None else []
    check_lengths = lengths is not None and lengths.active
    for spec in specs:
        fill = check_lengths and on_bad_record == "skip"  # over-long entries make room for later ones
        loaded = load_records(spec, limit=None if fill else n, on_bad_record=on_bad_record, options=options, read=read)
        source = str(loaded.path or spec)
        kept, dropped, skipped = loaded.records, [], loaded.skipped
        if fill:
            kept, dropped, end = lengths.select(loaded.records, loaded.positions, n)
            skipped = [bad for bad in skipped if end is None or bad.index < end]  # only those passed on the way
        elif check_lengths:
            lengths.check(loaded.records, source, loaded.positions)
        left_out = _left_out(skipped, dropped, lengths) if skipped or dropped else ""
        if not kept:
            raise DataError(loaded.path or spec, f"holds no usable records: {left_out}" if left_out else "holds no records")
        records[spec] = kept
        if left_out:
            warnings.append(f"{source}: {left_out}")
        ignored = loaded.unread_warning()
        if ignored:
            warnings.append(ignored)
        warnings += suspicious_records(kept, source)
    return records, warnings


def _left_out(skipped: list[BadRecord], dropped: list[Overlong], lengths: PromptLengths | None) -> str:
    """Skip mode's one count: the malformed entries and the over-long ones, each with its first."""
    parts = []
    if skipped:
        first = skipped[0]
        parts.append(f"{len(skipped)} malformed (first: record {first.index}, field '{first.field}': {first.message})")
    if dropped and lengths is not None:
        parts.append(lengths.dropped_summary(dropped))
    total = len(skipped) + len({d.position for d in dropped})
    return f"{total} record{'s' if total != 1 else ''} left out (--on-bad-record skip): {'; '.join(parts)}"


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


def check_remote_requirements(requirements: Iterable[RemoteCheck]) -> None:
    """After the model is loaded, before any work: what an editor will fetch (e.g. a remote C0
    corpus such as ``wikipedia`` whose statistics are not cached yet) must be reachable, else
    one line says what to do (``Editor.requirements`` / ``Editor.remote_requirements``)."""
    for requirement in requirements:
        requirement.check()
