"""Records shared by the probes: one scored sample, one aggregated score.

Percentages are reported with one decimal (docs/protocol.md#exact-match); the counts they come
from are kept beside them, so nothing is lost to rounding and differences of scores are
computed from the exact fractions, then rounded.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict, model_validator

from .registry import ProbeDefinition


def percent(hits: int, n: int) -> float | None:
    """100 · hits / n, unrounded; None when there is nothing to score."""
    return 100.0 * hits / n if n else None


def one_decimal(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


class ProbeSample(BaseModel):
    """One query of one record, scored by exact match.

    ``match`` is the score (teacher-forced fast path). ``generated`` is a greedy decode of
    len(target) + a few tokens, for reading what the model said; ``decode_match`` is the
    generate() path's verdict from that same decode, kept so that a disagreement between
    the two paths (near-tied logits under batching) is visible rather than hidden."""

    model_config = ConfigDict(frozen=True)

    record_id: str
    setting: str  # "PP", "PN", "NN", "NP", "paraphrase", "neighborhood", ...
    probe: str
    query: str
    expected: str
    match: bool
    generated: str | None = None
    decode_match: bool | None = None


class Score(BaseModel):
    """An exact-match rate with its counts and the probe that defines it."""

    model_config = ConfigDict(frozen=True)

    probe: str
    probe_version: int
    label: str
    hits: int
    n: int

    @model_validator(mode="after")
    def _counts(self) -> "Score":
        if not 0 <= self.hits <= self.n:
            raise ValueError(f"hits must be within 0..n, got {self.hits}/{self.n}")
        return self

    @property
    def exact(self) -> float | None:
        """The unrounded percentage (None when n == 0)."""
        return percent(self.hits, self.n)

    @property
    def value(self) -> float | None:
        """The percentage with one decimal, as reported."""
        return one_decimal(self.exact)

    @classmethod
    def of(cls, probe: ProbeDefinition, matches: Iterable[bool]) -> "Score":
        flags = list(matches)
        return cls(probe=probe.name, probe_version=probe.version, label=probe.label, hits=sum(flags), n=len(flags))

    def __str__(self) -> str:
        shown = "n/a" if self.value is None else f"{self.value:.1f}"
        return f"{self.probe}: {shown} ({self.hits}/{self.n})"
