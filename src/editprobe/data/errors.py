"""Errors for bad data: every message names the file, the record index and the field."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from ..errors import UserError


class DataError(UserError, ValueError):
    """Bad input data. ``str(err)`` is one line: ``FILE: record I: field F: message``.

    ``index`` is the 0-based position of the record in the file (the line number minus
    one for JSON Lines); ``index``/``field`` are None for whole-file problems.
    """

    def __init__(self, path: str | Path | None, message: str, index: int | None = None, field: str | None = None):
        self.path = str(path) if path is not None else None
        self.index = index
        self.field = field
        self.message = message
        super().__init__(self._render())

    def _render(self) -> str:
        parts = [self.path] if self.path else []
        if self.index is not None:
            parts.append(f"record {self.index}")
        if self.field:
            parts.append(f"field '{self.field}'")
        parts.append(self.message)
        return ": ".join(parts)


class FieldError(ValueError):
    """Raised by format converters for one field of one record; the loader adds file and index."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"field '{field}': {message}")


@dataclass(frozen=True)
class BadRecord:
    """A record that was skipped (``on_bad_record="skip"``) and why."""

    index: int
    field: str
    message: str

    def to_error(self, path: str | Path) -> DataError:
        return DataError(path, self.message, index=self.index, field=self.field)
