"""What a dataset format is: a content detector plus a converter to EditRecords, and what
the rest of editprobe needs to know of its records (how they are scored, which tuned
settings fit them)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ...registry import Registry
from ..fields import RawEntry
from ..records import EditRecord


# How the classic metrics score a dataset's records (probes/builtin/classic.py): "prob", the
# CounterFact protocol (teacher-forced probabilities of the new object against the old), or
# "tokens", the zsRE/EasyEdit one (teacher-forced token accuracy of the answer).
ScoringProtocol = Literal["prob", "tokens"]


@dataclass(frozen=True)
class DatasetFormat:
    """A dataset format.

    ``matches(raw)`` looks at the keys of one raw JSON object and says whether it has this
    format's shape (detection votes over the first records, so it should be cheap and
    structural). ``convert(entry, index)`` turns one raw object into one or more records
    (MQuAKE: one per requested rewrite), raising ``FieldError`` for bad fields; each record's
    ``source_format`` is the format's ``name``, which is how its format is found again.

    What the format declares of its records:

    - ``protocol``: how the classic metrics score them (``"prob"`` or ``"tokens"``); None
      decides from the records (``"prob"`` when every one has a true object and no question
      prompt);
    - ``kind``: the kind of dataset a tuned hparams file is for
      (``hparams/<method>/<model key>@<kind>.yaml``, editing/settings/profiles.py); None: the name;
    - ``has_locality``: whether its neighbourhood prompts are EasyEdit locality prompts,
      scored by agreement with the unedited model's tokens rather than against the
      dataset's answer.
    """

    name: str
    description: str
    matches: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[RawEntry, int], list[EditRecord]]
    protocol: ScoringProtocol | None = None
    kind: str | None = None
    has_locality: bool = False

    def __post_init__(self) -> None:
        if self.protocol not in (None, "prob", "tokens"):
            raise ValueError(f"dataset format {self.name!r}: protocol must be 'prob', 'tokens' or None, "
                             f"got {self.protocol!r}")
        if self.kind is None:
            object.__setattr__(self, "kind", self.name)


def record_id(entry: RawEntry, index: int) -> str:
    """``case_id`` or ``id`` when the file has one, else the record's position."""
    for key in ("case_id", "id"):
        found = entry.identifier(key)
        if found is not None:
            return found
    return str(index)


def is_question(prompt: str) -> bool:
    return prompt.rstrip().endswith("?")


# name -> format, in detection order (see formats/__init__.py).
DATASET_FORMATS: Registry[DatasetFormat] = Registry("dataset format", key=lambda fmt: fmt.name)


def register_format(fmt: DatasetFormat, *, first: bool = True, replace: bool = False) -> DatasetFormat:
    """Add a format. ``first``: try it before the built-in ones during detection, since a
    user's format is usually more specific than the generic built-in shapes."""
    return DATASET_FORMATS.register(fmt, first=first, replace=replace)


def formats_of(records: Iterable[EditRecord]) -> list[DatasetFormat]:
    """The registered formats the records were read in, in order of first appearance
    (records built by hand, of format "unknown", have none)."""
    names = dict.fromkeys(r.source_format for r in records)
    return [DATASET_FORMATS[name] for name in names if name in DATASET_FORMATS]


def format_kind(name: str) -> str:
    """The tuned-settings kind of the format ``name``; a name no format has (several formats
    read as one dataset, "a+b") is its own kind."""
    return DATASET_FORMATS[name].kind if name in DATASET_FORMATS else name  # type: ignore[return-value]
