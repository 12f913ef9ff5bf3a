"""The probe interface: what a run asks of every metric, and the typed results it gets back.

A run measures each probe on up to three model states of a dataset: the unedited model
(``baseline``) and the model after the sequential editing run with the positive requests
(``positive``) or the negated ones (``negative``). A probe says which states it needs; a
state it needs nobody else does still costs an editing run (``negative`` is skipped when no
selected probe needs it). From its measurements the probe builds:

- :meth:`Probe.no_edit` — the "No edit" row of the dataset (or None);
- :meth:`Probe.combine` — the row of one method (given the outcomes of the probes that
  came before it in the run's list, e.g. fact-checking reads the negation probe's PP).

Both return a :class:`ProbeOutcome` (named metrics, each with its protocol label) and
per-sample rows for ``samples.jsonl``. What ``measure`` returns is stored as JSON in the
run's stage files, so a resumed run reuses it; it must be JSON-serializable.

A probe registers where it is defined::

    @register_probe
    class MyProbe(Probe):
        name = "mine"
        stages = ("baseline", "positive")
        ...

or is named in a run config as ``module:attribute``.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..data.transform import IDENTITY, PromptTransform
from ..errors import UserError
from ..forms import QueryForm
from ..registry import Registry
from .intervals import bootstrap, wilson
from .results import Score

Stage = Literal["baseline", "positive", "negative"]
STAGES: tuple[Stage, ...] = ("baseline", "positive", "negative")
EDIT_STAGES: tuple[Stage, ...] = ("positive", "negative")

# The protocols a metric can be computed under; tables print them beside the numbers.
TEACHER_FORCED_PROB = "teacher-forced probability comparison"
TEACHER_FORCED_EM = "teacher-forced exact match"
TEACHER_FORCED_TOKENS = "teacher-forced token accuracy"
FREE_GENERATION = "free generation"


class Metric(BaseModel):
    """One number with what it means: its protocol label, its count, its direction, and its
    95% interval ``lo``..``hi`` (None where none is computed: docs/statistics.md).

    ``records`` holds the per-record values the number is the mean of (record id -> value on
    the metric's own scale: 0 or 100 for a hit rate in %, a difference in points for a
    discrepancy), so a comparison of two rows can pair them by record (``report --compare``)
    and a curve point can restrict them to the records edited so far. It is not part of the
    summary's JSON (the run writes them to ``records.jsonl``); None where the metric is not a
    mean over records (perplexity is corpus-level) or was read from a summary.
    """

    model_config = ConfigDict(frozen=True)

    value: float | None  # as reported: percentages with one decimal
    n: int | None = None  # how many samples (or records) it averages
    lo: float | None = None
    hi: float | None = None
    label: str
    unit: str = "%"
    higher_is_better: bool | None = None
    records: dict[str, float] | None = Field(default=None, exclude=True, repr=False)

    @classmethod
    def of_score(cls, score: Score, higher_is_better: bool | None = None,
                 records: Mapping[str, bool | float] | None = None) -> "Metric":
        """A proportion hits/n with its Wilson interval; ``records``: each record's outcome
        (True/1 a hit), kept ×100."""
        lo, hi = wilson(score.hits, score.n) or (None, None)
        kept = None if records is None else {rid: 100.0 * float(v) for rid, v in records.items()}
        return cls(value=score.value, n=score.n, label=score.label, higher_is_better=higher_is_better, lo=lo, hi=hi,
                   records=kept)

    @classmethod
    def mean(cls, values: list[float], label: str, unit: str = "%", scale: float = 100.0,
             higher_is_better: bool | None = True, digits: int = 1) -> "Metric":
        """The mean of per-item values (×``scale``), None when there are none, with its 95%
        interval: Wilson when the items are 0/1 outcomes in % (a plain proportion), else the
        bootstrap over the items."""
        value = round(scale * sum(values) / len(values), digits) if values else None
        if scale == 100.0 and all(v in (0.0, 1.0) for v in values):
            lo, hi = wilson(int(sum(values)), len(values), digits) or (None, None)
        else:
            lo, hi = bootstrap(values, scale, digits) or (None, None)
        return cls(value=value, n=len(values), label=label, unit=unit, higher_is_better=higher_is_better, lo=lo, hi=hi)

    @classmethod
    def of_records(cls, values: Mapping[str, float], label: str, unit: str = "%", scale: float = 100.0,
                   higher_is_better: bool | None = True, digits: int = 1) -> "Metric":
        """:meth:`mean` of one value per record (record id -> value), keeping them (×``scale``)."""
        metric = cls.mean(list(values.values()), label, unit, scale, higher_is_better, digits)
        return metric.model_copy(update={"records": {rid: scale * float(v) for rid, v in values.items()}})

    def restricted_to(self, ids: Iterable[str]) -> "Metric":
        """The same metric over the records ``ids`` only (those of them it has), its value and
        interval recomputed (a curve point: the records edited so far); itself when it has no
        per-record values."""
        if self.records is None:
            return self
        wanted = set(ids)
        kept = {rid: v for rid, v in self.records.items() if rid in wanted}
        if not kept:
            n = 0 if self.n == len(self.records) else self.n
            return self.model_copy(update={"value": None, "n": n, "lo": None, "hi": None, "records": {}})
        digits = 1
        if self.unit == "%" and all(v in (0.0, 100.0) for v in kept.values()):  # a hit rate: Wilson, as of_score
            hits = int(sum(v == 100.0 for v in kept.values()))
            lo, hi = wilson(hits, len(kept), digits) or (None, None)
        else:
            lo, hi = bootstrap(list(kept.values()), 1.0, digits) or (None, None)
        value = round(sum(kept.values()) / len(kept), digits)
        # n counts the records where it did (else it counts something else: Avg's discrepancies)
        n = len(kept) if self.n == len(self.records) else self.n
        return self.model_copy(update={"value": value, "n": n, "lo": lo, "hi": hi, "records": kept})


class ProbeOutcome(BaseModel):
    """A probe's result for one row of a table."""

    model_config = ConfigDict(frozen=True)

    probe: str
    version: int
    metrics: dict[str, Metric]
    table: str = "classic"  # the report table that shows it: negation, factcheck, classic
    details: dict[str, Any] = {}

    def value(self, metric: str) -> float | None:
        m = self.metrics.get(metric)
        return None if m is None else m.value


@dataclass
class ProbeContext:
    """What a probe sees of the run: the dataset's records (those the editing runs edit),
    the negation plan, the model in its current state, and the run's config."""

    dataset: str
    records: list  # EditRecord, the records of the plan (what the editing runs edit)
    plan: Any  # NegationPlan
    model: Any
    tokenizer: Any
    config: Any  # RunConfig
    extra: dict[str, Any] = field(default_factory=dict)
    # The editor's prompt transform (in-context editors put their facts into the prompt); the
    # identity for the unedited model and for weight editors. Probes ask every query through it.
    transform: PromptTransform = IDENTITY
    # The unedited model's outcomes of the probes before this one (probe name -> ProbeOutcome),
    # filled by the run as each no_edit returns: a probe that combines others (grounded) reads theirs.
    no_edit: dict[str, Any] = field(default_factory=dict)

    @property
    def formats(self) -> set[str]:
        return {r.source_format for r in self.records}


Rows = list[dict[str, Any]]


class Probe(ABC):
    """A metric family of a run. Subclasses set the class attributes and implement
    :meth:`measure`, :meth:`no_edit` (optional) and :meth:`combine`.

    A run calls :meth:`measure` once per stage in ``stages`` (the unedited model at
    ``baseline``, after the positive edits at ``positive``, after the negated edits at
    ``negative``), then :meth:`combine` on what it measured to give the method's row. A
    probe of your own is registered with :func:`register_probe` and named in a run's
    ``probes`` (docs/howto/add-probe.md).

    Attributes:
        name: What a run's ``probes`` and ``--probe`` name it by.
        version: Raised whenever the numbers change meaning; every result carries it.
        stages: The model states it measures.
        description: One line for ``probes list`` and the docs.
        default: Whether a run measures it when its config names no probes.
        table: The report table that shows it: ``negation``, ``factcheck`` or ``classic``.

    Examples:
        A probe that measures the new targets' length, run by hand on two records (a run
        does the same with the model in each state):

        >>> from editprobe.data import load_records
        >>> from editprobe.probes import Metric, Probe, ProbeContext
        >>> class TargetLength(Probe):
        ...     name = "target-length"
        ...     description = "mean length of the new targets, in characters"
        ...     default = False
        ...     def measure(self, ctx, stage, baseline):
        ...         return {"chars": [len(r.target_new) for r in ctx.records]}
        ...     def combine(self, ctx, states, others):
        ...         chars = states["positive"]["chars"]
        ...         metric = Metric.mean(chars, "Target length", unit="chars", scale=1.0)
        ...         return self.outcome({"chars": metric}), []
        >>> records = load_records("counterfact-sample", limit=2).records
        >>> ctx = ProbeContext(dataset="counterfact-sample", records=records, plan=None,
        ...                    model=None, tokenizer=None, config=None)
        >>> probe = TargetLength()
        >>> states = {stage: probe.measure(ctx, stage, None) for stage in probe.stages}
        >>> outcome, rows = probe.combine(ctx, states, {})
        >>> outcome.probe, outcome.value("chars")
        ('target-length', 6.5)
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    stages: ClassVar[tuple[Stage, ...]] = ("baseline", "positive")
    description: ClassVar[str] = ""
    default: ClassVar[bool] = True  # in a run's default probe list
    table: ClassVar[str] = "classic"  # which report table shows it
    # The query forms each metric asks (forms.py): where the row's editor trained on one (other
    # than the edited prompt itself), the run records the cell and every table marks it.
    metric_forms: ClassVar[Mapping[str, frozenset[QueryForm]]] = {}
    # Metrics a curve point (eval: every, runs/curve.py) leaves out: those that on one editing
    # stage only repeat another (the negation Avg is then its one discrepancy).
    not_on_curve: ClassVar[frozenset[str]] = frozenset()

    def applies_to(self, ctx: ProbeContext) -> bool:
        """Whether this probe has anything to measure on the dataset (e.g. paraphrases);
        a run leaves it out of a dataset where it has not. True by default."""
        return True

    @abstractmethod
    def measure(self, ctx: ProbeContext, stage: Stage, baseline: dict[str, Any] | None) -> dict[str, Any]:
        """Measure the model in ``ctx`` in its state ``stage``.

        Args:
            ctx: The records, the model as it is now, the prompt transform to ask through
                and the run's config.
            stage: ``baseline``, ``positive`` or ``negative``.
            baseline: What this probe measured on the unedited model (None at the
                baseline stage itself).

        Returns:
            The measurements, JSON-able (a checkpoint keeps them; a resumed run reads them
            back instead of measuring again).
        """

    def no_edit(self, ctx: ProbeContext, baseline: dict[str, Any]) -> tuple[ProbeOutcome | None, Rows]:
        """The unedited model's row (the tables' No-edit row) from the baseline measurements;
        None (no row) by default. Returns it with its sample rows."""
        return None, []

    @abstractmethod
    def combine(self, ctx: ProbeContext, states: dict[str, dict[str, Any]],
                others: dict[str, ProbeOutcome]) -> tuple[ProbeOutcome, Rows]:
        """A method's outcome from this probe's measurements at each of its stages.

        Args:
            ctx: As :meth:`measure` received it.
            states: What :meth:`measure` returned, by stage.
            others: The outcomes of the probes combined before this one, by name.

        Returns:
            The outcome (its metrics, made with :meth:`outcome`) and the sample rows the
            run writes to ``samples.jsonl`` (one dict per record and query).
        """

    def outcome(self, metrics: dict[str, Metric], **details: Any) -> ProbeOutcome:
        return ProbeOutcome(probe=self.name, version=self.version, metrics=metrics, table=self.table, details=details)


PROBES: Registry[Probe] = Registry("probe", key=lambda probe: probe.name)


def register_probe(cls: type[Probe] | Probe, replace: bool = False):
    """Register a probe class (as a decorator) or instance; returns what it was given.

    Args:
        cls: A :class:`Probe` subclass (registered as an instance of it) or an instance.
        replace: Replace a different probe registered under the same name; without it,
            registering the same class again (a re-import) is a no-op and another class
            under a taken name an error.

    Returns:
        ``cls``, so that it works as a class decorator.

    Raises:
        RegistryError: The name is taken by another probe, or the class is incomplete.

    Examples:
        >>> from editprobe.probes import PROBES, Probe, register_probe
        >>> @register_probe
        ... class NoOp(Probe):
        ...     name = "no-op"
        ...     default = False
        ...     def measure(self, ctx, stage, baseline):
        ...         return {}
        ...     def combine(self, ctx, states, others):
        ...         return self.outcome({}), []
        >>> PROBES["no-op"].name
        'no-op'
    """
    instance = cls() if isinstance(cls, type) else cls
    if type(PROBES.get(instance.name)) is type(instance) and not replace:
        return cls  # the same class again (a re-import): a no-op
    PROBES.register(instance, replace=replace)
    return cls


class ProbeSpecError(UserError, ValueError):
    pass


def resolve_probe(spec: str) -> Probe:
    """The probe a run's ``probes`` entry names.

    Args:
        spec: A registered probe name (``negation``, ``factcheck``, ``efficacy``, ...), or
            ``module:attribute`` naming a Probe class or instance (imported and registered
            on first use).

    Returns:
        The registered probe instance.

    Raises:
        UnknownNameError: No probe of that name (a KeyError listing the registered ones).
        ProbeSpecError: The module cannot be imported or holds no such Probe.

    Examples:
        >>> from editprobe.probes import resolve_probe
        >>> probe = resolve_probe("negation")
        >>> probe.table, probe.stages
        ('negation', ('baseline', 'positive', 'negative'))
    """
    if ":" not in spec:
        return PROBES[spec]
    module_name, _, attribute = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ProbeSpecError(f"probe {spec!r}: cannot import {module_name!r}: {exc}") from None
    obj = getattr(module, attribute, None)
    if obj is None:
        raise ProbeSpecError(f"probe {spec!r}: {module_name!r} has no attribute {attribute!r}")
    if not (isinstance(obj, Probe) or (isinstance(obj, type) and issubclass(obj, Probe))):
        raise ProbeSpecError(f"probe {spec!r}: {attribute!r} is not a Probe (subclass editprobe.probes.Probe)")
    instance = obj() if isinstance(obj, type) else obj
    register_probe(instance)
    return PROBES[instance.name]


def default_probes() -> tuple[str, ...]:
    return tuple(name for name, probe in PROBES.items() if probe.default)
