"""What ``editprobe tune`` searches and on which records: its config (flags), the dev split
(disjoint from the evaluation sets) and the search space of one method on one model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ...data.options import DatasetOptions, ZsreTarget
from ...errors import OptionError, validation_message
from ...runs.config import Count, DType, ProfileDefaults, ProfileName

DEFAULT_EVAL = ("counterfact-sample", "zsre-sample")
SIG_DIGITS = 3  # suggested floats are rounded before use, so the YAML holds what was measured
# The solve weights tune searches, by the hparams field a method names (its
# ``solve_weight_field``), each with the TuneConfig range (--lam, --l2) that bounds it.
SOLVE_WEIGHT_RANGES = {"mom2_update_weight": "lam", "L2": "l2"}


def _key(text: str) -> str:
    return " ".join(text.lower().split())


class TuneConfig(ProfileDefaults):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str = "smollm2-135m"
    method: str = "memit"
    data: str  # the dev dataset (file or built-in name)
    out: Path  # the hparams YAML to write
    n: Count = 12  # dev records (after skipping overlaps and unnegatable templates)
    batch_size: Count = 6
    trials: Count = 20
    timeout_min: float | None = Field(None, gt=0)  # no new trial starts after this many minutes
    seed: int = 0
    evaluation: tuple[str, ...] = DEFAULT_EVAL  # the sets the dev records must be disjoint from
    exclude_overlap: bool = False  # skip overlapping dev records instead of refusing
    negative: bool = True  # the negated-request run (NN, NP, Avg) for every finished trial
    hparams: str | None = None  # the base file (unsearched fields); None: the shipped default
    profile: ProfileName = None
    overrides: dict[str, Any] = Field(default_factory=dict)
    layers: tuple[int, int] | None = None  # candidate layers lo..hi; None: around the base window
    width: tuple[int, int] | None = None  # window widths; None: 3..6 (1 for ROME)
    v_lr: tuple[float, float] = (0.05, 2.0)
    steps: tuple[int, int] = (10, 50)  # zsRE targets needed 40+ steps on SmolLM2 (docs/tune.md)
    clamp: tuple[float, float] = (0.5, 8.0)
    lam: tuple[float, float] = (100.0, 30000.0)  # mom2_update_weight λ
    l2: tuple[float, float] = (0.1, 100.0)  # AlphaEdit's ridge L2 (replaces λ there)
    dtype: DType = None
    device: str | None = None
    overwrite: bool = False
    max_prompt_tokens: Count | None = None  # None: the model's context length (runs/lengths.py)
    zsre_target: ZsreTarget = "answers"  # zsRE's edit target (data/options.py)

    @field_validator("layers", "width", "v_lr", "steps", "clamp", "lam", "l2")
    @classmethod
    def _ordered(cls, v, info):
        if v is None:
            return v
        lo, hi = v
        if lo > hi:
            raise ValueError(f"the range {lo}:{hi} is empty (low above high)")
        floor = 0 if info.field_name == "layers" else 1 if info.field_name in ("width", "steps") else None
        if floor is not None and lo < floor:
            raise ValueError(f"must be at least {floor}, got {lo}")
        if floor is None and lo <= 0:  # searched on a log scale
            raise ValueError(f"must be above 0 (searched on a log scale), got {lo}")
        return v

    @field_validator("out")
    @classmethod
    def _yaml_suffix(cls, v: Path) -> Path:
        if v.suffix not in (".yaml", ".yml"):
            raise ValueError(f"the hparams file must end in .yaml or .yml, got {v.name!r}")
        return v

    @model_validator(mode="after")
    def _method(self):
        from ...editing.lte.engine import LTEEditor
        from ...editing.registry import method_class

        cls = method_class(self.method)  # an unknown method is one line naming the known ones
        if not issubclass(cls, LTEEditor):
            raise ValueError(f"tune searches locate-then-edit settings; {self.method!r} has none of them")
        if cls.solve_weight_field is not None and cls.solve_weight_field not in SOLVE_WEIGHT_RANGES:
            raise ValueError(f"{self.method!r} weighs its solve with {cls.solve_weight_field!r}; tune has a range "
                             f"only for {', '.join(SOLVE_WEIGHT_RANGES)}")
        return self

    @classmethod
    def build(cls, fields: dict[str, Any]) -> "TuneConfig":
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            where, message = validation_message(exc)
            flag = {"evaluation": "eval", "timeout_min": "timeout"}.get(where, where)
            raise OptionError(f"--{flag.replace('_', '-')}: {message}" if flag else message) from None

    def command(self) -> str:
        """The command line that reproduces this search (written into the YAML)."""
        parts = ["editprobe tune", f"--model {self.model}", f"--method {self.method}", f"--data {self.data}",
                 f"--out {self.out}", f"--n {self.n}", f"--batch-size {self.batch_size}",
                 f"--trials {self.trials}", f"--seed {self.seed}"]
        if self.timeout_min is not None:
            parts.append(f"--timeout {self.timeout_min:g}")
        parts += [f"--eval {e}" for e in self.evaluation]
        parts += ["--exclude-overlap"] * self.exclude_overlap + ["--no-negative"] * (not self.negative)
        parts += [f"--hparams {self.hparams}"] * (self.hparams is not None)
        parts += [f"--profile {self.profile}"] * (self.profile is not None)
        parts += [f"--set {k}={v}" for k, v in self.overrides.items()]
        for name in ("layers", "width", "v_lr", "steps", "clamp", "lam", "l2"):
            value = getattr(self, name)
            if value is not None and (name in ("layers", "width") or value != type(self).model_fields[name].default):
                parts.append(f"--{name.replace('_', '-')} {value[0]:g}:{value[1]:g}")
        return " ".join(parts)


def parse_range(text: str | None, option: str, integer: bool = False) -> tuple[float, float] | None:
    """``LO:HI`` (or one value for both) -> (lo, hi); one clear line for anything else."""
    if text is None:
        return None
    parts = text.split(":")
    try:
        if len(parts) not in (1, 2):
            raise ValueError
        values = [int(p) if integer else float(p) for p in parts]
    except ValueError:
        kind = "integers" if integer else "numbers"
        raise OptionError(f"--{option}: expected LO:HI ({kind}), got {text!r}") from None
    if any(isinstance(v, float) and not math.isfinite(v) for v in values):
        raise OptionError(f"--{option}: expected finite numbers, got {text!r}")
    return (values[0], values[-1])


def round_sig(x: float, digits: int = SIG_DIGITS) -> float:
    return float(f"{x:.{digits}g}")


# --- the dev split ----------------------------------------------------------------------------
class DevSplit(BaseModel):
    """The dev records a search edits, and how they were chosen."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    plan: Any  # a NegationPlan of the dev records
    path: str
    sha256: str
    n_in_file: int
    skipped_overlap: int
    skipped_unnegatable: int
    unread_fields: str | None = None  # the loader's line naming the fields the format ignores


def overlapping(records, evaluation: dict[str, list]) -> dict[str, list]:
    """For each evaluation set, the ``records`` that share a subject or a prompt (with its
    subject) with it, compared case- and whitespace-insensitively."""
    out: dict[str, list] = {}
    for spec, evals in evaluation.items():
        subjects, queries = {_key(r.subject) for r in evals}, {_key(r.query) for r in evals}
        hits = [r for r in records if _key(r.subject) in subjects or _key(r.query) in queries]
        if hits:
            out[spec] = hits
    return out


def choose_dev_split(config: TuneConfig) -> DevSplit:
    """The first ``n`` records of the dev data that overlap no evaluation set (or refuse when
    they do, unless ``exclude_overlap``) and whose template can be negated (PN needs it)."""
    import hashlib

    from ...data import load_records
    from ...data.builtin_data import resolve_data
    from ...data.errors import DataError
    from ...data.negation_plan import NegationPlan, build_negation_plan

    options = DatasetOptions(zsre_target=config.zsre_target)
    loaded = load_records(config.data, options=options)
    records = loaded.records
    if not records:
        raise DataError(loaded.path or config.data, "holds no records")
    evaluation = {spec: load_records(spec, options=options).records for spec in config.evaluation}
    skipped = 0
    if config.exclude_overlap:
        bad = {id(r) for hits in overlapping(records, evaluation).values() for r in hits}
        skipped = len(bad)
        records = [r for r in records if id(r) not in bad]
    else:
        # Only the records a search would use matter; a file may hold more.
        window = records[: 3 * config.n]
        clash = overlapping(window, evaluation)
        if clash:
            spec, hits = next(iter(clash.items()))
            r = hits[0]
            raise OptionError(
                f"--data {config.data}: {len(hits)} of its first {len(window)} records share a subject or prompt "
                f"with the evaluation set {spec} (e.g. record {r.id}: {r.query!r}); tuning on them would score "
                f"settings on records they are evaluated on. Use a disjoint dev file, or --exclude-overlap to "
                f"skip those records")
    candidates = records[: 3 * config.n + 20]
    plan = build_negation_plan(candidates)
    if plan.n_records < config.n:
        raise OptionError(f"--data {config.data}: only {plan.n_records} usable dev records (disjoint from "
                          f"{', '.join(config.evaluation)} and negatable), --n {config.n} asked")
    used = plan.items[: config.n]
    last = next(i for i, r in enumerate(candidates) if r.id == used[-1].record.id)
    passed = {r.id for r in candidates[:last]}  # records a search skipped on its way to the n-th
    unnegatable = sum(1 for e in plan.excluded if e.record_id in passed)
    plan = NegationPlan(items=used, excluded=())
    path = resolve_data(config.data)
    return DevSplit(plan=plan, path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                    n_in_file=loaded.n_total, skipped_overlap=skipped, skipped_unnegatable=unnegatable,
                    unread_fields=loaded.unread_warning())


# --- the search space -------------------------------------------------------------------------
class SearchSpace(BaseModel):
    """What a trial may change, for one method on one model."""

    model_config = ConfigDict(frozen=True)

    layers: tuple[int, int]
    width: tuple[int, int]
    v_lr: tuple[float, float]
    steps: tuple[int, int]
    clamp: tuple[float, float]
    solve_name: str | None  # the method's solve_weight_field: "mom2_update_weight" (λ), "L2" (AlphaEdit), None
    solve: tuple[float, float] | None

    @property
    def candidate_layers(self) -> list[int]:
        return list(range(self.layers[0], self.layers[1] + 1))

    @classmethod
    def build(cls, config: TuneConfig, base, n_layers: int) -> "SearchSpace":
        """The ranges of ``config`` for ``base`` (the base hparams) on a model of ``n_layers``."""
        from ...editing.registry import method_class

        editor_cls = method_class(config.method)
        lo, hi = min(base.layers), max(base.layers)
        layers = config.layers or (max(0, lo - 3), min(n_layers - 1, hi + 4))
        if layers[1] >= n_layers:
            raise OptionError(f"--layers {layers[0]}:{layers[1]}: the model has layers 0..{n_layers - 1}")
        span = layers[1] - layers[0] + 1
        width = config.width or ((1, 1) if editor_cls.single_layer else (min(3, span), min(6, span)))
        if width[0] > span:
            raise OptionError(f"--width {width[0]}:{width[1]}: wider than the {span} candidate layers "
                              f"{layers[0]}..{layers[1]}")
        width = (width[0], min(width[1], span))
        solve_name = editor_cls.solve_weight_field
        solve = getattr(config, SOLVE_WEIGHT_RANGES[solve_name]) if solve_name is not None else None
        return cls(layers=layers, width=width, v_lr=config.v_lr, steps=config.steps, clamp=config.clamp,
                   solve_name=solve_name, solve=solve)

    def window(self, last: int, width: int) -> list[int]:
        return list(range(max(self.layers[0], last - width + 1), last + 1))

    def suggest(self, trial) -> dict[str, Any]:
        """The hparams fields of one trial (floats rounded to what the YAML will hold)."""
        last = trial.suggest_int("last_layer", self.layers[0] + self.width[0] - 1, self.layers[1])
        width = trial.suggest_int("width", *self.width)
        fields: dict[str, Any] = {
            "layers": self.window(last, width),
            "v_lr": round_sig(trial.suggest_float("v_lr", *self.v_lr, log=True)),
            "v_num_grad_steps": trial.suggest_int("v_num_grad_steps", *self.steps),
            "clamp_norm_factor": round_sig(trial.suggest_float("clamp_norm_factor", *self.clamp, log=True)),
        }
        if self.solve_name is not None and self.solve is not None:
            fields[self.solve_name] = round_sig(trial.suggest_float(self.solve_name, *self.solve, log=True))
        return fields

    def baseline(self, base) -> tuple[dict[str, Any] | None, str | None]:
        """The optuna params of the base setting, or None and why it lies outside the space."""
        layers = list(base.layers)
        params: dict[str, Any] = {"last_layer": layers[-1], "width": len(layers), "v_lr": base.v_lr,
                                  "v_num_grad_steps": base.v_num_grad_steps, "clamp_norm_factor": base.clamp_norm_factor}
        if self.solve_name is not None:
            params[self.solve_name] = getattr(base, self.solve_name)
        bounds = {"last_layer": (self.layers[0] + self.width[0] - 1, self.layers[1]), "width": self.width,
                  "v_lr": self.v_lr, "v_num_grad_steps": self.steps, "clamp_norm_factor": self.clamp,
                  **({self.solve_name: self.solve} if self.solve_name else {})}
        if layers != list(range(layers[0], layers[-1] + 1)):
            return None, f"its layers {layers} are not consecutive"
        for name, value in params.items():
            if not isinstance(value, (int, float)) or not bounds[name][0] <= value <= bounds[name][1]:
                return None, f"its {name} {value} lies outside {bounds[name][0]:g}..{bounds[name][1]:g}"
        return params, None
