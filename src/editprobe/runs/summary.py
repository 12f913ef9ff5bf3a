"""The typed run summary (``summary.json``), versioned.

Schema 1: every table row is a set of probe outcomes (``probes: {name: ProbeOutcome}``),
for each method (``results``) and for the unedited model (``datasets[...].no_edit``).
Schema 2 adds each metric's 95% interval (``lo``, ``hi``) and how the intervals were drawn
(``intervals``: bootstrap seed, resamples, level); schema 1 is the same without them (its
intervals read as missing: "–"). Schema 0 (summaries written before probes were plug-ins, with no ``schema_version``) is
read by converting its fixed ``negation``/``factcheck`` fields; a newer schema is refused.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import UserError, validation_message
from ..probes.base import Metric, ProbeOutcome

SCHEMA_VERSION = 2
READABLE = (0, 1, 2)  # 1: no intervals (Metric.lo/hi default None, intervals None)


class SummaryError(UserError, ValueError):
    pass


class DatasetSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    n_records: int  # records in the negation settings
    n_excluded: int = 0  # records left out of them (their query cannot be negated)
    n_edited: int | None = None  # every record, edited and measured by the other probes
    negation_rules: dict[str, int] = Field(default_factory=dict)
    # Where each negated query came from: "record" (the record's own) or the rules' family.
    negation_sources: dict[str, int] = Field(default_factory=dict)
    n_negated_edits: int | None = None  # records edited with their negated query (NN, NP)
    targets: str | None = None  # what zsRE records were edited toward (None: no zsRE records)
    notes: list[str] = Field(default_factory=list)  # how the records were read, where it matters
    probes: list[str] = Field(default_factory=list)  # the probes that applied to this dataset
    no_edit: dict[str, ProbeOutcome] = Field(default_factory=dict)


class CurvePoint(BaseModel):
    """One evaluation point of a run with ``eval: every`` (docs/curves.md): the probes'
    outcomes after ``batches`` batches (``edits`` requests) of one editing stage, over the
    records edited so far (``part: edited``) or over the held-out slice of records no run
    edits (``part: heldout``)."""

    model_config = ConfigDict(extra="allow")

    stage: str  # "positive" | "negative": which editing run
    batches: int
    edits: int
    part: str  # "edited" | "heldout"
    n_records: int
    probes: dict[str, ProbeOutcome] = Field(default_factory=dict)


class ResultRow(BaseModel):
    """One method on one dataset."""

    model_config = ConfigDict(extra="allow")

    dataset: str
    method: str
    # The editor's non-default mode, e.g. "defend" for MEMIT with negation: defend; tables
    # print "memit+defend", so runs of one method in two modes stay apart.
    variant: str | None = None
    preserve_previous: bool | None = None
    probes: dict[str, ProbeOutcome]
    hparams: dict[str, Any] = Field(default_factory=dict)
    # The YAML the hparams were read from (file, sha256) and why: explicit, profile or shipped.
    hparams_file: dict[str, Any] | None = None
    c0: dict[str, Any] | None = None  # corpus, documents asked for and actually read per layer
    edit_reports: dict[str, Any] = Field(default_factory=dict)
    # The query forms the row's editor trained on (forms.py), and per probe the metrics that
    # ask one of them (other than the edited prompt): tables mark those cells.
    trained_forms: list[str] = Field(default_factory=list)
    trained_cells: dict[str, list[str]] = Field(default_factory=dict)
    # The curve over edits (eval: every): points in stage, batch, part order; empty otherwise.
    curve: list[CurvePoint] = Field(default_factory=list)

    def value(self, probe: str, metric: str) -> float | None:
        outcome = self.probes.get(probe)
        return None if outcome is None else outcome.value(metric)


class RunSummary(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    config: dict[str, Any]
    seed: int = 0
    model_dtype: str | None = None  # the dtype the model ran in (the config's dtype may be None)
    versions: dict[str, str] = Field(default_factory=dict)
    datasets: dict[str, DatasetSummary]
    results: list[ResultRow]
    timings: dict[str, Any] = Field(default_factory=dict)
    # How the metrics' intervals were drawn (probes/intervals.py settings()); None before schema 2.
    intervals: dict[str, Any] | None = None

    @property
    def model(self) -> str:
        return str(self.config.get("model"))


# --- reading ---------------------------------------------------------------------------------------


def _outcome(probe: str, values: dict[str, Any], keys: tuple[str, ...], label: str,
             units: dict[str, str] | None = None, n: dict[str, int | None] | None = None,
             **details: Any) -> ProbeOutcome:
    metrics = {k: Metric(value=values.get(k), label=label, unit=(units or {}).get(k, "%"), n=(n or {}).get(k))
               for k in keys if k in values}
    return ProbeOutcome(probe=probe, version=0, metrics=metrics, table=probe, details=details)


_V0_LABEL = "as recorded by an editprobe run of summary schema 0"
_DISCREPANCY = ("PP-PN", "PP-NP", "NN-PN", "NN-NP", "Avg")


def _from_v0(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema 0's fixed fields as probe outcomes (the numbers are taken as they were)."""
    out = {k: v for k, v in raw.items() if k not in ("datasets", "results")}
    out["schema_version"] = 0
    points = {k: "points" for k in _DISCREPANCY}
    out["datasets"] = {}
    for dk, d in raw.get("datasets", {}).items():
        no_edit = {"negation": _outcome("negation", d.get("no_edit", {}), ("PP", "PN"), _V0_LABEL,
                                        n_known=d.get("no_edit", {}).get("n_known"))}
        fc = d.get("factcheck_no_edit")
        if fc:
            no_edit["factcheck"] = _outcome("factcheck", fc, ("Acc",), _V0_LABEL, n={"Acc": fc.get("n")})
        out["datasets"][dk] = {"n_records": d.get("n_records", 0), "n_excluded": d.get("n_excluded", 0),
                               "negation_rules": d.get("negation_rules", {}), "no_edit": no_edit,
                               "probes": ["negation", "factcheck"]}
    out["results"] = []
    for r in raw.get("results", []):
        probes = {"negation": _outcome("negation", r.get("negation", {}), ("PP", "PN", "NN", "NP", *_DISCREPANCY),
                                       _V0_LABEL, units=points, counts=r.get("counts", {}))}
        if r.get("factcheck"):
            probes["factcheck"] = _outcome("factcheck", r["factcheck"], ("Eff", "Acc", "Control", "Balanced"),
                                           _V0_LABEL, n={"Acc": r["factcheck"].get("n")})
        out["results"].append({"dataset": r["dataset"], "method": r["method"],
                               "preserve_previous": r.get("preserve_previous"), "probes": probes,
                               "hparams": r.get("hparams", {}), "edit_reports": r.get("edit_reports", {})})
    return out


def parse_summary(raw: Any, where: str = "summary.json") -> RunSummary:
    """A summary of any schema this version reads, as a :class:`RunSummary`."""
    if not isinstance(raw, dict):
        raise SummaryError(f"{where}: not a JSON object")
    version = raw.get("schema_version", 0)
    if version == 0:
        raw = _from_v0(raw)
    elif version not in READABLE:
        raise SummaryError(f"{where}: summary schema {version} is newer than this editprobe reads "
                           f"(0..{SCHEMA_VERSION}); upgrade editprobe to read it")
    try:
        return RunSummary.model_validate(raw)
    except ValidationError as exc:
        field, message = validation_message(exc)
        raise SummaryError(f"{where}: field {field!r}: {message}") from None
