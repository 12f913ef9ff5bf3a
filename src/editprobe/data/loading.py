"""Read a dataset file (JSON array or JSON Lines), detect its format, convert and validate."""

from __future__ import annotations

import functools
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .builtin_data import resolve_data
from .errors import BadRecord, DataError, FieldError
from .fields import RawEntry
from .formats import DATASET_FORMATS, DatasetFormat
from .joining import joined_parts, unique_ids
from .options import DatasetOptions, apply_options, single_rewrites
from .records import EditRecord

OnBadRecord = Literal["error", "skip"]
ReadEntries = Callable[[Path], list[Any]]  # a file's entries (read_entries, or a reader that parses once)
RECORD_FIELD = "(record)"  # the field name used for problems with a record as a whole
DETECTION_SAMPLE = 20
MAX_NAMED_FIELDS = 12


@dataclass(frozen=True)
class LoadResult:
    """``n_total`` counts the entries in the file; ``records`` may hold more (an MQuAKE case
    gives one record per rewrite). Every skipped entry is listed in ``skipped``.
    ``positions[i]``: the entry (0-based, in the file) that ``records[i]`` came from.
    ``unread``: each top-level field the format's converter never read, with the number of
    loaded entries that have it; ``n_loaded`` counts those entries."""

    records: list[EditRecord]
    format: str
    n_total: int
    skipped: list[BadRecord] = field(default_factory=list)
    path: Path | None = None
    positions: list[int] = field(default_factory=list)
    unread: dict[str, int] = field(default_factory=dict)
    n_unread_entries: int = 0
    n_loaded: int = 0

    @property
    def n_skipped(self) -> int:
        return len(self.skipped)

    def unread_warning(self) -> str | None:
        """One line naming the fields this format ignores, or None: input the program does not
        understand is named, never dropped in silence."""
        if not self.unread:
            return None
        names = sorted(self.unread, key=lambda name: (-self.unread[name], name))
        shown = ", ".join(names[:MAX_NAMED_FIELDS]) + (f" and {len(names) - MAX_NAMED_FIELDS} more"
                                                        if len(names) > MAX_NAMED_FIELDS else "")
        return (f"{self.path}: {self.n_unread_entries} of {self.n_loaded} records have fields the {self.format} "
                f"format does not read: {shown} (ignored)")


def read_entries(path: Path) -> list[Any]:
    """The top-level items of a JSON array, or the objects of a JSON Lines file.

    A JSON Lines line that does not parse is returned as a :class:`BadRecord`, so skip mode
    can skip it like any other bad record.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except UnicodeDecodeError as exc:
        raise DataError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(path, f"cannot read: {exc.strerror}") from None
    stripped = text.lstrip()
    if not stripped:
        raise DataError(path, "is empty")
    if stripped.startswith("["):
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(path, f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from None
        if not isinstance(entries, list):  # pragma: no cover - a '[' start always parses to a list
            raise DataError(path, "expected a JSON array of records")
        return entries
    return _read_jsonl(path, text)


def _read_jsonl(path: Path, text: str) -> list[Any]:
    entries: list[Any] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            if not entries and _parses_as_one_object(text):
                raise DataError(
                    path, "holds a single JSON object; expected an array of records or JSON Lines (one object per line)"
                ) from None
            entries.append(BadRecord(len(entries), RECORD_FIELD, f"line {line_no}: not valid JSON: {exc.msg}"))
    return entries


def parse_once() -> ReadEntries:
    """A reader that parses each file once and hands later loads the same entries: a plan
    loads a dataset for its records and again for its kind (editing/settings/profiles.py), from one
    parse. The entries are shared: a converter reads them and never changes them."""
    return functools.cache(lambda path: read_entries(path))


def _parses_as_one_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def detect_format(entries: list[Any], path: str | Path | None = None) -> DatasetFormat:
    """The registered format that most of the first records match (ties: registry order)."""
    votes: Counter[str] = Counter()
    sample = [e for e in entries if isinstance(e, dict)][:DETECTION_SAMPLE]
    for entry in sample:
        for fmt in DATASET_FORMATS.values():
            if fmt.matches(entry):
                votes[fmt.name] += 1
                break
    if not votes:
        keys = sorted(sample[0]) if sample else []
        shown = f"record keys {keys}" if sample else "no record is a JSON object"
        raise DataError(
            path, f"unrecognised dataset format ({shown}); known formats: {', '.join(DATASET_FORMATS)}", field=None
        )
    order = list(DATASET_FORMATS)
    best = max(votes, key=lambda name: (votes[name], -order.index(name)))
    return DATASET_FORMATS[best]


def _convert(fmt: DatasetFormat, raw: Any, index: int) -> tuple[list[EditRecord] | BadRecord, list[str]]:
    """The entry's records (or why it is bad), and the top-level fields the converter did not read."""
    if isinstance(raw, BadRecord):
        return raw, []
    if not isinstance(raw, dict):
        kind = "array" if isinstance(raw, list) else type(raw).__name__
        return BadRecord(index, RECORD_FIELD, f"expected a JSON object, got {kind}"), []
    entry = RawEntry(raw)
    try:
        return fmt.convert(entry, index), entry.unread()
    except FieldError as exc:
        return BadRecord(index, exc.field, exc.message), []
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or RECORD_FIELD
        return BadRecord(index, where, err["msg"]), []


def load_records(
    path: str | Path,
    format: str | None = None,
    on_bad_record: OnBadRecord = "error",
    limit: int | None = None,
    options: DatasetOptions | None = None,
    read: ReadEntries | None = None,
) -> LoadResult:
    """Load a dataset file (or a built-in dataset name) as EditRecords.

    Args:
        path: A JSON or JSON Lines file, a built-in dataset name (``counterfact-sample``,
            ``counterfact-train``, ``zsre-sample``), or files joined with ``+``.
        format: A name in ``DATASET_FORMATS`` (``counterfact``, ``zsre``, ``mquake``,
            ``knowedit``, ``easyedit``, ``paper``, and any registered with
            ``register_format``); None detects it from the content.
        on_bad_record: ``"error"`` raises a :class:`DataError` naming the first bad record
            (its index and field); ``"skip"`` leaves each bad record out and lists it in
            ``LoadResult.skipped``.
        limit: Stop after this many good entries (MQuAKE: cases, a case is never split;
            with ``options.mquake_unit="rewrite"``, rewrites). None: all of them.
        options: How the records are read (:class:`DatasetOptions`; default: zsRE edits
            toward ``answers[0]``, MQuAKE by case).
        read: How a file's entries are read (default: :func:`read_entries`; :func:`parse_once`
            shares one parse between loads).

    Returns:
        The records with the format, the number of entries in the file, the skipped
        entries and where each record came from (:class:`LoadResult`).

    Raises:
        DataError: The file cannot be read, the format is unknown or cannot be detected,
            or a record is bad and ``on_bad_record`` is ``"error"``.
        ValueError: ``on_bad_record`` is neither ``"error"`` nor ``"skip"``, or ``limit``
            is negative.

    Examples:
        The built-in CounterFact sample:

        >>> from editprobe.data import load_records
        >>> result = load_records("counterfact-sample", limit=2)
        >>> result.format, len(result.records)
        ('counterfact', 2)
        >>> record = result.records[0]
        >>> record.subject, record.target_true, record.target_new
        ('Danielle Darrieux', 'French', 'English')

        A file with a bad record, skipped and counted instead of failing the load:

        >>> import json
        >>> good = {"case_id": 0, "requested_rewrite": {
        ...     "prompt": "The mother tongue of {} is", "subject": "Danielle Darrieux",
        ...     "target_new": {"str": "English"}, "target_true": {"str": "French"}}}
        >>> with open("facts.json", "w") as f:
        ...     json.dump([good, {"case_id": 1}], f)
        >>> result = load_records("facts.json", on_bad_record="skip")
        >>> result.n_total, len(result.records), result.skipped[0].field
        (2, 1, 'requested_rewrite')
        >>> load_records("facts.json")
        Traceback (most recent call last):
        ...
        editprobe.data.errors.DataError: facts.json: record 1: field 'requested_rewrite': missing
    """
    if on_bad_record not in ("error", "skip"):
        raise ValueError(f"on_bad_record must be 'error' or 'skip', got {on_bad_record!r}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    options = options or DatasetOptions()
    parts = joined_parts(path)
    if parts is not None:
        return _load_joined(str(path), parts, format, on_bad_record, limit, options, read)
    resolved = resolve_data(path)
    entries = (read or read_entries)(resolved)
    if format is None:
        fmt = detect_format(entries, resolved)
    elif format in DATASET_FORMATS:
        fmt = DATASET_FORMATS[format]
    else:
        raise DataError(resolved, f"unknown format {format!r}; known formats: {', '.join(DATASET_FORMATS)}")

    records: list[EditRecord] = []
    positions: list[int] = []
    skipped: list[BadRecord] = []
    first_seen: dict[str, int] = {}
    unread: Counter[str] = Counter()
    n_unread = n_good = 0
    # MQuAKE edited as single rewrites: ``limit`` counts rewrites, chosen after reading
    rewrites = fmt.name == "mquake" and options.mquake_unit == "rewrite"
    for index, raw in enumerate(entries):
        if limit is not None and n_good >= limit and not rewrites:
            break
        result, ignored = _convert(fmt, raw, index)
        if not isinstance(result, BadRecord):
            result = _check_unique_ids(result, raw, index, first_seen)
        if isinstance(result, BadRecord):
            if on_bad_record == "error":
                raise result.to_error(resolved)
            skipped.append(result)
            continue
        for rec in result:
            first_seen[rec.id] = index
        records.extend(result)
        positions.extend([index] * len(result))
        unread.update(ignored)
        n_unread += bool(ignored)
        n_good += 1
    records = apply_options(records, options)
    if rewrites:
        records, positions = single_rewrites(records, positions, limit)
    return LoadResult(records=records, format=fmt.name, n_total=len(entries), skipped=skipped, path=resolved,
                      positions=positions, unread=dict(unread), n_unread_entries=n_unread, n_loaded=n_good)


def _check_unique_ids(
    records: list[EditRecord], raw: dict, index: int, first_seen: dict[str, int]
) -> list[EditRecord] | BadRecord:
    # Results and checkpoints are keyed by record id, so a duplicate would silently
    # overwrite another record's results.
    for rec in records:
        if rec.id in first_seen:
            where = "case_id" if "case_id" in raw else "id"
            return BadRecord(index, where, f"duplicate id {rec.id!r} (first used by record {first_seen[rec.id]})")
    return records


def _load_joined(spec: str, parts: list[str], format: str | None, on_bad_record: OnBadRecord, limit: int | None,
                 options: DatasetOptions, read: ReadEntries | None = None) -> LoadResult:
    """Several files read in order as one dataset (data/joining.py); ``limit`` counts across
    them (entries, or MQuAKE's rewrites when edited one by one)."""
    results: list[tuple[str, LoadResult]] = []
    taken = offset = 0
    positions: list[int] = []
    for part in parts:
        remaining = None if limit is None else limit - taken
        if remaining is not None and remaining <= 0:
            break
        result = load_records(part, format, on_bad_record, remaining, options, read)
        results.append((part, result))
        positions += [offset + p for p in result.positions]
        offset += result.n_total
        counts_rewrites = result.format == "mquake" and options.mquake_unit == "rewrite"
        taken += len(result.records) if counts_rewrites else result.n_loaded
    unread: Counter[str] = Counter()
    for _, result in results:
        unread.update(result.unread)
    return LoadResult(records=unique_ids([(part, result.records) for part, result in results]),
                      format="+".join(dict.fromkeys(result.format for _, result in results)),
                      n_total=sum(result.n_total for _, result in results),
                      skipped=[bad for _, result in results for bad in result.skipped], path=Path(spec),
                      positions=positions, unread=dict(unread),
                      n_unread_entries=sum(result.n_unread_entries for _, result in results),
                      n_loaded=sum(result.n_loaded for _, result in results))
