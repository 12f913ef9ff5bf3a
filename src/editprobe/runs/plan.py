"""Plan once, then run: everything a job checks and reads before a model loads, built once.

:meth:`RunPlan.build` is the plan of ``editprobe run``: it reads each dataset file once (its
records and its kind from one parse), chooses and validates the hyperparameters of every
(method, dataset) once (editing/settings/profiles.py), builds each dataset's negation plan
(data/negation_plan.py), resolves the probes and collects the warnings. It loads no model and
touches no directory; the loop (loop.py) then resolves nothing.

The other jobs are built of the same pieces: :func:`read_datasets` (records and kind),
:meth:`MethodPlan.build` (the hparams choice) and ``preflight.check_model_and_device`` (model
reference, device, cache), and have the shape :class:`Job` names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from ..data.errors import DataError
from ..data.loading import OnBadRecord, parse_once
from ..data.negation_plan import NegationPlan, build_negation_plan
from ..data.options import DatasetOptions
from ..data.records import EditRecord
from ..errors import clip, quoted
from ..probes.base import Probe, Stage, resolve_probe
from .advice import unanchored_warning
from .config import RunConfig, RunConfigError
from .preflight import check_datasets, check_model_and_device

if TYPE_CHECKING:
    from ..editing.api import Editor
    from ..editing.settings.profiles import HParamsChoice
    from .lengths import PromptLengths

__all__ = ["DatasetPlan", "DatasetRecords", "HParamsSource", "Job", "MethodPlan", "RunPlan", "check_overrides",
           "choice_needs_kind", "order_probes", "plan_method", "read_datasets", "sampled"]


@runtime_checkable
class Job(Protocol):
    """The shape of every command's job (``run``'s :class:`~editprobe.runs.Experiment`,
    ``edit``'s EditJob, ``tune``'s Tuner, ``train rledit``'s TrainJob; a study runs
    Experiments): built from its validated config, ``preflight(...)`` does every check that
    needs no model and writes nothing, from its plan pieces, and returns the warning lines;
    ``run(...)`` loads the model and works (preflighting first when the caller has not).
    The arguments differ by command (``resume`` where a job resumes, progress callbacks)."""

    def preflight(self, *args: Any, **kwargs: Any) -> list[str]: ...

    def run(self, *args: Any, **kwargs: Any) -> Any: ...


# --- datasets -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetRecords:
    """A dataset as a job reads it: its records (checked, up to n) and its kind
    (``editing/profiles.dataset_kind``: which tuned hparams file fits it; None: unreadable)."""

    spec: str
    records: tuple[EditRecord, ...]
    kind: str | None


def read_datasets(specs: Sequence[str], n: int | None, lengths: PromptLengths | None = None,
                  on_bad_record: OnBadRecord = "error", options: DatasetOptions | None = None
                  ) -> tuple[dict[str, DatasetRecords], list[str]]:
    """Every dataset's records (``preflight.check_datasets``) and kind, each file parsed once;
    and the warnings about them."""
    from ..editing.settings.profiles import dataset_kind

    read = parse_once()
    records, warnings = check_datasets(specs, n, lengths, on_bad_record, options, read=read)
    return {spec: DatasetRecords(spec, tuple(records[spec]), dataset_kind(spec, read=read)) for spec in specs}, warnings


@dataclass(frozen=True)
class DatasetPlan:
    """One dataset of a run: its key in results and stage names, its kind, the records every
    editing run edits, and its negation plan (the records the negation settings score)."""

    spec: str
    key: str
    kind: str | None
    records: tuple[EditRecord, ...]
    negation: NegationPlan
    # eval: every — records no stage edits, measured at every curve point (docs/curves.md),
    # and their negation plan (for a held-out probe that reads one).
    heldout: tuple[EditRecord, ...] = ()
    heldout_negation: NegationPlan | None = None


def negation_plan(spec: str, records: Sequence[EditRecord], negate) -> NegationPlan:
    """The dataset's negation plan: a run scores the records whose template has a negated
    form (every setting is measured on the same records), so a dataset with none is refused
    here rather than finishing having edited nothing."""
    plan = build_negation_plan(records, negate)
    if records and plan.n_records == 0:
        first = plan.excluded[0]
        raise DataError(spec, f"none of its {len(records)} records has a template that can be negated "
                              f"(e.g. record {first.record_id}: {first.template!r}); a run evaluates only "
                              f"records with a negated query: give --negation-table (see `editprobe data "
                              f"negate`)")
    return plan


def sampled(dataset: DatasetRecords, size: int, seed: int) -> DatasetRecords:
    """``size`` of the dataset's records drawn by ``seed``, in the drawn order (``sample:``,
    docs/protocol.md#seeds): the first ``size`` of a ``random.Random(seed)`` shuffle."""
    from ..data.corpus_sample import permutation_prefix

    if len(dataset.records) < size:
        raise DataError(dataset.spec, f"sample: {size} draws more records than the {len(dataset.records)} read "
                                      f"(the first n, usable ones); lower sample")
    chosen = permutation_prefix(len(dataset.records), size, seed)
    return replace(dataset, records=tuple(dataset.records[i] for i in chosen))


def _heldout_pool(config: RunConfig) -> int:
    """How many records after the first n are read to draw the held-out slice from (four times
    its size, so the draw is a draw; none without a curve)."""
    return 4 * config.curve.heldout if config.eval == "every" else 0


def _split_heldout(config: RunConfig, read: dict[str, DatasetRecords], warnings: list[str]
                   ) -> tuple[dict[str, DatasetRecords], dict[str, tuple[EditRecord, ...]]]:
    """Each dataset's first n records (the run's) and its held-out slice: ``curve.heldout`` of
    the records after them, drawn by the run seed (docs/curves.md). A dataset with fewer left
    gets those, and a warning."""
    runs, heldout = {}, {}
    for spec, d in read.items():
        runs[spec] = replace(d, records=d.records[:config.n])
        rest = d.records[config.n:]
        if config.eval != "every" or config.curve.heldout == 0:
            heldout[spec] = ()
            continue
        from ..data.corpus_sample import permutation_prefix

        size = min(config.curve.heldout, len(rest))
        heldout[spec] = tuple(rest[i] for i in permutation_prefix(len(rest), size, config.seed))
        if size < config.curve.heldout:
            warnings.append(f"{spec}: {size} records after the first n={config.n} for the curve's held-out slice "
                            f"(curve.heldout: {config.curve.heldout}); " +
                            ("the curve has no held-out part" if size == 0 else "the slice is smaller"))
    return runs, heldout


# --- methods ------------------------------------------------------------------------------------
class HParamsSource(Protocol):
    """Where a job's hyperparameters come from (the fields of RunConfig, EditConfig, TuneConfig)."""

    model: str
    hparams: str | None
    profile: str | None


@dataclass(frozen=True)
class MethodPlan:
    """A method on one dataset: the hparams file chosen (and why), the validated
    hyperparameters (checked against the model's layers once it loads) and the editor class."""

    method: str
    choice: HParamsChoice
    hparams: BaseModel
    editor_cls: type[Editor]

    @classmethod
    def build(cls, method: str, source: HParamsSource, overrides: Mapping[str, Any] | None = None,
              kind: str | None = None) -> "MethodPlan":
        """The file ``method`` reads for ``source`` (a file tuned for the dataset's ``kind``,
        when shipped) and its hyperparameters with ``overrides``."""
        from ..editing import resolve_hparams
        from ..editing.settings.profiles import choose_hparams
        from ..editing.registry import method_class

        choice = choose_hparams(method, source.model, source.hparams, source.profile, kind=kind)
        return cls(method, choice, resolve_hparams(method, choice.path, dict(overrides or {})), method_class(method))

    def with_run_seed(self, seed: int) -> "MethodPlan":
        """This plan with the editor's own seeds (``Editor.seed_fields``: the context templates,
        IKE's demonstrations) derived from the run's ``seed``; seed 0 keeps the file's."""
        return replace(self, hparams=self.editor_cls.run_seeded_hparams(self.hparams, seed))

    def stages(self, needed: Sequence[Stage]) -> list[Stage]:
        """The stages of ``needed`` this method edits (RLEdit: the positive requests only)."""
        return [k for k in needed if k in self.editor_cls.edit_stages]

    def make_editor(self, model, tokenizer, model_id: str):
        from ..editing import make_editor

        return make_editor(self.method, model, tokenizer, self.hparams, model_id=model_id)


def choice_needs_kind(source: HParamsSource) -> bool:
    """Whether the hparams file depends on the dataset's kind: without ``hparams`` or
    ``profile`` a file tuned for the kind wins (editing/settings/profiles.py). A job chooses such a
    file once its datasets are read, any other first, so that a typo costs no dataset read."""
    return source.hparams is None and source.profile is None


def plan_method(config: RunConfig, method: str, kind: str | None = None) -> MethodPlan:
    """A run's :class:`MethodPlan`: the --set values that are hyperparameters of ``method`` (a
    run may mix methods whose hyperparameters differ, e.g. RLEdit's hypernet beside MEMIT's v_lr)."""
    from ..editing.registry import method_class

    fields = method_class(method).hparams_cls.model_fields
    overrides = {k: v for k, v in config.hparams_overrides().items() if k in fields}
    return MethodPlan.build(method, config, overrides, kind).with_run_seed(config.seed)


def check_overrides(config: RunConfig) -> None:
    """Every --set key is a hyperparameter of some method of the run."""
    from ..editing.registry import method_class

    for key, value in config.overrides.items():
        if not any(key in method_class(m).hparams_cls.model_fields for m in config.methods):
            raise RunConfigError(f"--set {clip(key)}={quoted(value)}: not a hyperparameter of "
                                 f"{', '.join(config.methods)}")


def _method_plans(config: RunConfig, keys: Mapping[str, str], kinds: Mapping[str, str | None]
                  ) -> dict[tuple[str, str], MethodPlan]:
    return {(method, keys[spec]): plan_method(config, method, kinds.get(spec))
            for method in config.methods for spec in config.datasets}


# --- probes -------------------------------------------------------------------------------------
def order_probes(probes: list[Probe]) -> list[Probe]:
    """The config's order, except that a probe comes after the probes it ``uses``."""
    ordered: list[Probe] = []
    pending = list(probes)
    while pending:
        names = {p.name for p in pending}
        ready = [p for p in pending if not (set(getattr(p, "uses", ())) & (names - {p.name}))]
        ordered.append(ready[0] if ready else pending[0])
        pending.remove(ordered[-1])
    return ordered


def _prompt_lengths(config: RunConfig, probes: Sequence[Probe], negate_fn, loaded) -> PromptLengths:
    """The token cap on every query the run will ask of each record (runs/lengths.py)."""
    from ..data.negation import negate
    from .lengths import PromptLengths

    fn = negate_fn or negate
    factcheck = config.factcheck if any(p.name == "factcheck" for p in probes) else None
    return PromptLengths(config.model, config.max_prompt_tokens, loaded=loaded, factcheck=factcheck,
                         negated=lambda template, rid: _negated(fn(template, rid)))


def _negated(negation) -> str | None:
    """The negated template of a negation function's answer (a Negation, a string or None)."""
    return getattr(negation, "negated", negation)


# --- the run ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPlan:
    """Everything a run needs before its model loads, each file read once."""

    config: RunConfig
    datasets: tuple[DatasetPlan, ...]
    methods: Mapping[tuple[str, str], MethodPlan]  # (method, dataset key)
    probes: tuple[Probe, ...]  # resolved (module:attribute imported) and ordered
    warnings: tuple[str, ...]  # about suspicious data (counts, not rows)
    # eval: every — the probes of a curve point over the edited records and over the held-out slice.
    curve_probes: tuple[Probe, ...] = ()
    heldout_probes: tuple[Probe, ...] = ()

    @classmethod
    def build(cls, config: RunConfig, loaded=None) -> "RunPlan":
        """Every check that needs no model and writes nothing: the --set keys, each method's
        hyperparameters, the negation table, the probes, every record of every dataset
        (within the token cap), the negation plans, the device and the model reference.
        ``loaded``: a LoadedModel a caller already holds (its tokenizer counts the tokens;
        the model reference is not checked again)."""
        from ..data.negation import negation_function
        from ..data.question_forms import question_table

        check_overrides(config)
        if config.save_model:  # before any work: IKE's (GRACE's, WISE's) edit is not in the weights
            from .saved_models import refuse_unsavable

            refuse_unsavable(config.methods, "save_model")
        keys = config.dataset_keys()
        by_kind = choice_needs_kind(config)
        methods = {} if by_kind else _method_plans(config, keys, {})
        negate = negation_function(config.negation_table)  # a bad table fails here, not after the baseline
        question_table(config.battery.question_table)  # so does a bad question table (battery: question_table)
        probes = tuple(order_probes([resolve_probe(spec) for spec in config.probes]))
        read, warnings = read_datasets(config.datasets, config.n + _heldout_pool(config),
                                       _prompt_lengths(config, probes, negate, loaded), config.on_bad_record,
                                       config.dataset_options())
        read, heldout = _split_heldout(config, read, warnings)
        if config.sample is not None:
            read = {spec: sampled(d, config.sample, config.seed) for spec, d in read.items()}
        if by_kind:
            methods = _method_plans(config, keys, {spec: read[spec].kind for spec in config.datasets})
        datasets = tuple(DatasetPlan(spec, keys[spec], read[spec].kind, read[spec].records,
                                     negation_plan(spec, read[spec].records, negate), heldout[spec],
                                     build_negation_plan(heldout[spec], negate) if heldout[spec] else None)
                         for spec in config.datasets)
        warnings += [line for d in datasets if (line := unanchored_warning(d.spec, d.negation))]
        if loaded is None:
            check_model_and_device(config.model, config.device)
        curve, heldout_probes = (), ()
        if config.eval == "every":
            curve = tuple(p for p in probes if p.name in config.curve.probes)  # the run's order
            heldout_probes = tuple(order_probes([resolve_probe(spec) for spec in config.curve.heldout_probes]))
        return cls(config, datasets, methods, probes, tuple(warnings), curve, heldout_probes)

    def method(self, method: str, dataset: DatasetPlan) -> MethodPlan:
        return self.methods[(method, dataset.key)]
