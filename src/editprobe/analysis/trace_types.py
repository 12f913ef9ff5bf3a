"""The types causal tracing's two modules share (analysis/tracing.py, which prepares records
and assembles the effects, and analysis/trace_restore.py, which runs the restored forwards):
its settings, a record prepared for tracing and its error."""

from __future__ import annotations

from dataclasses import dataclass

from ..data.records import EditRecord
from ..errors import UserError


class TraceError(UserError, ValueError):
    """Bad tracing settings or nothing to trace."""


@dataclass(frozen=True)
class TraceSettings:
    samples: int = 10
    noise: float = 3.0  # multiple of the subject-embedding std
    layers_window: int = 10
    seed: int = 0
    max_rows: int = 512  # rows per packed forward; a job (samples rows) is never split

    def check(self) -> "TraceSettings":
        if self.samples < 1:
            raise TraceError(f"samples must be at least 1, got {self.samples}")
        if self.layers_window < 1:
            raise TraceError(f"layers window must be at least 1, got {self.layers_window}")
        if not self.noise >= 0:  # also rejects NaN
            raise TraceError(f"noise must be a non-negative multiple of the embedding std, got {self.noise}")
        if self.max_rows < 1:
            raise TraceError(f"max_rows must be at least 1, got {self.max_rows}")
        return self


@dataclass(frozen=True)
class Prepared:
    """A record tokenized for tracing: ids of the query, the subject's token range
    (inclusive, in those ids) and the true object's first token."""

    index: int  # in the loaded records
    record: EditRecord
    ids: list[int]
    subject_first: int
    subject_last: int
    target_id: int
