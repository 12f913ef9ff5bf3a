"""The configuration of one experiment run (docs/protocol.md#experimental-protocol), from YAML or flags.

A run is (model) × (methods) × (datasets): for each dataset a no-edit baseline, and for each
method two sequential batch-editing runs (positive and negated requests). Everything that
changes the numbers lives here, so the saved config identifies a run and ``--resume``
can refuse to continue a run under a different one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from ..data.options import DatasetOptions, MquakeUnit, ZsreTarget
from ..probes.battery import BatteryConfig
from ..probes.factcheck import FactCheckConfig
from ..errors import UserError, one_line, validation_message
from ..yamlio import load_yaml
from .overrides_key import one_overrides_key


class RunConfigError(UserError, ValueError):
    pass


# The layout of a run directory's stage files; a run started under another layout cannot
# be resumed by this version (its stages hold other things).
RUN_LAYOUT_KEY = "run_layout"
RUN_LAYOUT = 1


def _at_least_one(v: int) -> int:
    if v < 1:
        raise ValueError("must be >= 1")
    return v


def _known_dtype(v: str | None) -> str | None:
    from ..models.loading import parse_dtype

    parse_dtype(v)  # raises with the list of dtypes
    return v


def _known_profile(v: str | None) -> str | None:
    from ..editing.settings.profiles import check_profile_name

    return check_profile_name(v)


# Field types shared by the job configs (run, edit).
Count = Annotated[int, AfterValidator(_at_least_one)]
DType = Annotated[str | None, AfterValidator(_known_dtype)]
ProfileName = Annotated[str | None, AfterValidator(_known_profile)]


class ProfileDefaults(BaseModel):
    """A job config with a ``profile`` field: the profile's run settings (e.g. the paper
    profile's float32) fill the fields left unset (editing/settings/profiles.py)."""

    @model_validator(mode="before")
    @classmethod
    def _profile_settings(cls, data: Any) -> Any:
        from ..editing.settings.profiles import with_profile_settings

        return with_profile_settings(data)


class CurveConfig(BaseModel):
    """What each evaluation point of ``eval: every`` measures (docs/curves.md). [choice] The
    defaults keep a point's cost bounded: the negation settings and efficacy over the records
    edited so far; neighbourhood and perplexity over a held-out slice."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Over the records edited so far; each must be one of the run's probes (its baseline is the run's).
    probes: tuple[str, ...] = ("negation", "efficacy")
    # Records never edited, drawn by the run seed from the dataset's records after the first n
    # (0: no held-out slice); fixed whatever n is.
    heldout: Annotated[int, Field(ge=0)] = 50
    heldout_probes: tuple[str, ...] = ("neighborhood", "perplexity")

    @field_validator("probes", "heldout_probes")
    @classmethod
    def _distinct(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate entries in {list(v)}")
        return tuple(v)


class RunConfig(ProfileDefaults):
    """The settings of a run: what ``editprobe run CONFIG.yaml`` reads (the YAML's keys are
    these fields) and :func:`~editprobe.runs.run_experiment` takes. Frozen; an unknown
    field is refused.

    Attributes:
        model: A built-in name, a local directory or a hub id (as ``load_model`` takes).
        methods: The registered methods to run, each on every dataset.
        datasets: Dataset files or built-in names (``load_records``).
        n: Records per dataset (the first n; the paper: 2000).
        sample: Draw this many of the first ``n`` records by seed (their order too)
            instead of taking the first n; None: the first n, in file order.
        batch_size: Requests per sequential batch (the paper: 100).
        preserve_previous: Keep the keys of earlier batches (K_p, Table 6's switch); None:
            the hparams file's setting.
        seed: Seeds every batch, so a resumed run equals an uninterrupted one.
        out: The run directory written.
        hparams: A model key, a YAML or a folder of ``<method>.yaml``; None: the profile's
            or the shipped file for ``model``.
        profile: A named set of hparams files with its run settings (``paper``: the
            paper's settings, float32); an explicit ``hparams`` still wins.
        overrides: Single hparams fields, applied to every method that has them.
        negation_table: A user YAML ``template: negated template`` that overrides the
            negation rules.
        factcheck: The fact-check probe's wording (``FactCheckConfig``).
        battery: The shortcut battery's settings (``BatteryConfig``).
        eval: ``final``: evaluate the final model only; ``every``: also after every
            ``eval_every`` batches (the curve over edits).
        eval_every: Batches between curve points; alone it implies ``eval: every``.
        curve: What each curve point measures (``CurveConfig``).
        probes: The probes measured (registered names or ``module:attribute``); default:
            every default probe, each where it applies.
        checkpoint_every: Checkpoint after every k-th batch (and the last).
        dtype: The model's dtype (``float32``, ``bf16``, ...); None: the checkpoint's.
        device: The model's device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).
        target_cache: Reuse a batch's optimized target vectors when the same batch was
            optimized before on the same model state with the same settings (identical
            numbers either way).
        max_prompt_tokens: The most tokens any query may have (None: the model's context
            length), checked before the model loads.
        on_bad_record: ``error``: a malformed or over-long record fails the run before
            work starts; ``skip``: it is left out and counted.
        zsre_target: zsRE's edit target: ``answers`` (answers[0], the paper's convention)
            or ``alt`` (EasyEdit's).
        mquake_unit: What ``n`` counts in MQuAKE: a ``case`` or a single ``rewrite``.
        save_model: Save each method's positively edited model as a Hugging Face
            checkpoint in ``OUT/models/<dataset>__<method>/``.

    Examples:
        >>> from editprobe.runs import RunConfig
        >>> config = RunConfig(methods=["memit", "alphaedit"], n=100, batch_size=50, out="runs/first")
        >>> config.methods, config.datasets, config.eval
        (('memit', 'alphaedit'), ('counterfact-sample',), 'final')
        >>> RunConfig(n=10, sample=20)
        Traceback (most recent call last):
        ...
        pydantic_core._pydantic_core.ValidationError: 1 validation error for RunConfig
        ...
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"  # built-in name, local directory or hub id
    methods: tuple[str, ...] = ("memit",)
    datasets: tuple[str, ...] = ("counterfact-sample",)  # dataset files or built-in names
    n: Count = 2000  # records per dataset (paper: 2000)
    # Draw this many of the first n records by seed (their order too) instead of taking the
    # first n (docs/protocol.md#seeds); None: the first n, in file order.
    sample: Count | None = None
    batch_size: Count = 100  # requests per sequential batch (paper: 100)
    preserve_previous: bool | None = None  # None: the hparams file's setting (Table 6 switch)
    seed: int = 0  # seeds every batch, so a resumed run equals an uninterrupted one
    out: Path = Path("runs/run")
    hparams: str | None = None  # model key, YAML or folder of <method>.yaml; None: the profile's or shipped file
    # A named set of hparams files with its run settings (e.g. "paper": the paper's §5.1
    # settings, float32); an explicit ``hparams`` still wins (editing/settings/profiles.py).
    profile: ProfileName = None
    overrides: dict[str, Any] = Field(default_factory=dict)  # single hparams fields
    # A user YAML "template: negated", overrides the rules (docs/protocol.md#negating-a-template).
    negation_table: str | None = None
    # The fact-check probe's wording (docs/protocol.md#fact-checking; defaults: statement
    # "{query} {target}", no full stop).
    # E.g. {statement_template: "{query} {target}."} — SmolLM2-135M judges 4% of true
    # CounterFact statements true without the full stop and 42% with it.
    factcheck: FactCheckConfig = Field(default_factory=FactCheckConfig)
    # The shortcut battery's settings (docs/battery.md): known facts only, question forms.
    battery: BatteryConfig = Field(default_factory=BatteryConfig)
    # [choice, matches the AlphaEdit driver] evaluate once, on the final model ("final"); or
    # also after every ``eval_every`` batches of each editing stage ("every": the curve over
    # edits, docs/curves.md). ``eval_every`` alone implies "every".
    eval: Literal["final", "every"] = "final"
    eval_every: Count | None = None
    curve: CurveConfig = Field(default_factory=CurveConfig)
    # The probes measured (registered names or module:attribute); default: every built-in
    # probe marked default, each where it applies (negation, fact-checking, the classic
    # metrics of each dataset, perplexity).
    probes: tuple[str, ...] = Field(default_factory=lambda: _default_probes())
    # Checkpoint after every k-th batch (and the last): ~1.2 GB deltas + 29 MB keys per 100 edits at Llama-3-8B.
    checkpoint_every: Count = 1
    dtype: DType = None
    device: str | None = None
    # Read a batch's target vectors from the target cache when the same batch was optimized
    # before on the same model state with the same settings (editing/lte/target_cache.py); the
    # numbers are identical either way, so it is not part of the run's identity.
    target_cache: bool = True
    # The most tokens any query of a record may have (None: the model's context length, from
    # its config.json), checked with the tokenizer before the model loads (runs/lengths.py).
    max_prompt_tokens: Count | None = None
    # A malformed or over-long record: an error naming it, or left out and counted ("skip").
    on_bad_record: Literal["error", "skip"] = "error"
    # zsRE's edit target (data/options.py): answers[0] with no old object (the MEMIT and
    # AlphaEdit repositories' and the paper's convention), or alt with answers[0] as the old
    # object (EasyEdit's). Runs saved before this field read as "alt".
    zsre_target: ZsreTarget = "answers"
    # What n counts in MQuAKE (data/options.py): a case (its rewrites together), or a single
    # rewrite (the paper's grid: 2000 rewrites of MQuAKE-CF).
    mquake_unit: MquakeUnit = "case"
    # Save each method's positively edited model as a Hugging Face checkpoint in
    # OUT/models/<dataset>__<method>/ (docs/evaluate.md); a resumed run saves them too.
    save_model: bool = False

    @field_validator("methods", "datasets", "probes")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("needs at least one entry")
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate entries in {list(v)}")
        return tuple(v)

    @model_validator(mode="before")
    @classmethod
    def _every_from_eval_every(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("eval_every") is not None and data.get("eval") is None:
            return {**data, "eval": "every"}
        return data

    @model_validator(mode="after")
    def _eval_every_given(self) -> "RunConfig":
        if self.eval == "every" and self.eval_every is None:
            raise ValueError("eval: every needs eval_every: K (evaluate after every K batches)")
        if self.eval == "final" and self.eval_every is not None:
            raise ValueError(f"eval_every: {self.eval_every} with eval: final; drop one (eval_every alone means every)")
        if self.eval == "every":
            missing = [p for p in self.curve.probes if p not in self.probes]
            if missing:
                raise ValueError(f"curve.probes {missing} are not among the run's probes {list(self.probes)}: a "
                                 f"curve point reuses the run's baseline of each")
        return self

    @field_validator("sample")
    @classmethod
    def _sample_within_n(cls, v: int | None, info: ValidationInfo) -> int | None:
        n = info.data.get("n")
        if v is not None and n is not None and v > n:
            raise ValueError(f"draws {v} of the first n records, but n is {n}: raise n (the pool) to at least {v}")
        return v

    @field_validator("datasets")
    @classmethod
    def _distinct_files(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        keys = dataset_keys(v)
        if len(set(keys.values())) != len(keys):  # results and stages are keyed by it
            same = [spec for spec in v if list(keys.values()).count(keys[spec]) > 1]
            raise ValueError(f"{' and '.join(same)} name the same dataset file")
        return v

    def dataset_options(self) -> DatasetOptions:
        """How the run's datasets are read."""
        return DatasetOptions(zsre_target=self.zsre_target, mquake_unit=self.mquake_unit)

    def dataset_keys(self) -> dict[str, str]:
        """Each dataset's key in results and stage names (:func:`dataset_keys`)."""
        return dataset_keys(self.datasets)

    def hparams_overrides(self) -> dict[str, Any]:
        """The overrides handed to ``make_editor``: the explicit switch wins over ``overrides``."""
        out = dict(self.overrides)
        if self.preserve_previous is not None:
            out["preserve_previous"] = self.preserve_previous
        return out

    def identity(self) -> dict[str, Any]:
        """What must match for ``--resume`` to continue a run (the out dir may move), and the
        layout of the run directory it was written with."""
        # Fields that came later are left out at their defaults, so runs saved before them still resume.
        later = {"profile": None, "max_prompt_tokens": None, "on_bad_record": "error", "mquake_unit": "case",
                 "sample": None, "battery": BatteryConfig(), "save_model": False}
        exclude = {"out", "device", "checkpoint_every", "target_cache"} | {k for k, v in later.items()
                                                                             if getattr(self, k) == v}
        if self.eval == "final":  # the curve's settings change nothing then (and runs made before lack them)
            exclude |= {"eval_every", "curve"}
        if not may_hold_zsre(self.datasets):  # e.g. the demo's: a run saved before the field still matches
            exclude.add("zsre_target")
        return {**self.model_dump(mode="json", exclude=exclude), RUN_LAYOUT_KEY: RUN_LAYOUT}

    @classmethod
    def from_yaml(cls, path: str | Path, **flags: Any) -> "RunConfig":
        """A YAML file's fields, with ``flags`` (those not None) taking precedence."""
        return cls.from_sources(path, flags)

    @classmethod
    def from_sources(cls, path: str | Path | None, flags: dict[str, Any], overrides: dict[str, Any] | None = None,
                     base: dict[str, Any] | None = None) -> "RunConfig":
        """The config the CLI runs: ``base`` (a resumed run's saved fields), then the YAML file's
        fields, then the flags that are not None; ``overrides`` add to the hparams overrides."""
        fields = dict(base or {})
        if path is not None:
            fields.update(read_config_file(path))
        fields.update({k: v for k, v in flags.items() if v is not None})
        if overrides:
            fields["overrides"] = {**fields.get("overrides", {}), **overrides}
        return cls.build(fields)

    @classmethod
    def build(cls, fields: dict[str, Any]) -> "RunConfig":
        """Validate ``fields`` with one clear error line naming the field."""
        fields = one_overrides_key(fields, "run config", RunConfigError)
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            where, message = validation_message(exc)
            raise RunConfigError(f"run config: field {where or 'config'!r}: {message}") from None


def _default_probes() -> tuple[str, ...]:
    from ..probes import default_probes

    return default_probes()


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A run config YAML's fields; one clear error when it is unreadable or not a mapping."""
    try:
        raw = load_yaml(Path(path)) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise RunConfigError(f"cannot read run config {path}: {reason}") from None
    if not isinstance(raw, dict):
        raise RunConfigError(f"{path}: a run config must be a mapping of fields")
    return one_overrides_key(raw, str(path), RunConfigError)


def may_hold_zsre(datasets: Sequence[str]) -> bool:
    """False only when every dataset is a built-in one without zsRE records (then the zsRE
    target changes nothing); a file may hold any format."""
    from ..data.builtin_data import BUILTIN_DATASETS

    return not all(spec in BUILTIN_DATASETS and not Path(spec).is_file() and "zsre" not in spec for spec in datasets)


def dataset_key(spec: str, among: Sequence[str] = ()) -> str:
    """A short, filesystem-safe name for a dataset's results and stage files: a file's stem
    (or a built-in name) as a slug, never a path. When another dataset ``among`` the run's
    or study's has the same slug but another file, both get 8 hex digits of their resolved
    path's hash (``facts-1a2b3c4d``), so their results never mix."""
    slug = _slug_of(spec)
    if any(_slug_of(other) == slug and _identity(other) != _identity(spec) for other in among):
        return f"{slug}-{hashlib.sha256(_identity(spec).encode()).hexdigest()[:8]}"
    return slug


def dataset_keys(specs: Sequence[str]) -> dict[str, str]:
    """``{spec: key}`` for datasets used together (a run's, or every run's of a study)."""
    return {spec: dataset_key(spec, specs) for spec in specs}


def _slug_of(spec: str) -> str:
    from ..data.joining import JOIN, joined_parts

    parts = joined_parts(spec)
    if parts is not None:  # several files as one dataset: "test_cf+train_cf"
        return JOIN.join(_slug_of(part) for part in parts)
    path = Path(spec)
    stem = path.stem if path.suffix else path.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")[:80] or "data"


def _identity(spec: str) -> str:
    """What tells two datasets apart: the resolved file(s), or the built-in name."""
    from ..data.builtin_data import BUILTIN_DATASETS
    from ..data.joining import JOIN, joined_parts

    parts = joined_parts(spec)
    if parts is not None:
        return JOIN.join(_identity(part) for part in parts)
    path = Path(spec).expanduser()
    if not path.is_file() and spec in BUILTIN_DATASETS:  # an existing file wins, as in resolve_data
        return f"builtin:{spec}"
    return str(path.resolve())
