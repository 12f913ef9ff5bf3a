"""Per-record values of a finished run's metrics (``OUT/records.jsonl``).

A table prints each metric's mean; what it is the mean of — one value per record
(:attr:`~editprobe.probes.base.Metric.records`) — is kept here, one line per (dataset, row,
probe, metric), so that two rows can be compared record by record (``report --compare``,
report/compare.py) and runs that differ by seed pooled. The no-edit row is ``method: "none"``.
Runs finished before this file existed have none; whoever reads it says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ..errors import UserError

RECORDS = "records.jsonl"


class RecordValuesError(UserError, ValueError):
    pass


class RecordValues(BaseModel):
    """One metric of one row: its values per record on the metric's scale."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    method: str  # "none": the unedited model's row
    variant: str | None = None
    preserve_previous: bool | None = None
    probe: str
    metric: str
    unit: str = "%"
    values: dict[str, float]


def record_lines(dataset: str, method: str, variant: str | None, preserve_previous: bool | None,
                 outcomes: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The lines of one row (``outcomes``: probe name -> ProbeOutcome) for every metric that
    holds per-record values."""
    return [RecordValues(dataset=dataset, method=method, variant=variant, preserve_previous=preserve_previous,
                         probe=probe, metric=key, unit=metric.unit, values=metric.records).model_dump(mode="json")
            for probe, outcome in outcomes.items() for key, metric in outcome.metrics.items()
            if metric.records is not None]


def has_record_values(root: str | Path) -> bool:
    return (Path(root) / RECORDS).is_file()


def read_record_values(root: str | Path) -> list[RecordValues]:
    """Every line of a run's ``records.jsonl``; one clear error naming the line when it is
    malformed, and when the run has none (finished before per-record values were kept)."""
    path = Path(root) / RECORDS
    if not path.is_file():
        raise RecordValuesError(f"{root}: no {RECORDS}: the run finished before editprobe kept per-record values "
                                f"(or is unfinished); run it again with this version to compare it record by record")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append(RecordValues.model_validate(json.loads(line)))
        except (ValueError, ValidationError) as exc:
            raise RecordValuesError(f"{path}: line {number}: not a per-record line ({str(exc).splitlines()[0]})"
                                    ) from None
    return out
