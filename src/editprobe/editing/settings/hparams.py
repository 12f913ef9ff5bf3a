"""Typed, validated hyperparameters, one YAML per method × model (with its source cited)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from ...data.placeholders import one_subject_slot
from ...errors import UserError, clip, one_line, quoted, validation_message
from ...yamlio import load_yaml

HPARAMS_DIR = Path(__file__).parent / "hparams"


class HParamsError(UserError, ValueError):
    pass


class LTEHParams(BaseModel):
    """Settings shared by the MEMIT-style engine (docs/methods/memit.md, Settings)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    # Why a method cannot take forward-replay targets (None: it can); the check names it.
    forward_replay_refusal: ClassVar[str | None] = None

    method: str
    source: str = Field("", description="where these values come from (paper, repo:path, or our sweep)")
    layers: list[int]
    # target optimization (docs/engine.md, Target search)
    v_lr: float = 0.5
    v_num_grad_steps: int = 20
    v_weight_decay: float = 0.5
    clamp_norm_factor: float = 0.75
    kl_factor: float = 0.0625
    early_stop_loss: float = 5e-2
    kl_prompt: str | None = "{} is a"
    # context templates (docs/engine.md, Context templates)
    template_groups: list[tuple[int, int]] = [(10, 5)]
    template_flat: bool = False
    template_seed: int = 0
    # closed form (docs/engine.md, Solvers)
    mom2_update_weight: float | list[float] = 15000.0
    L2: float = 0.0  # alpha·I ridge added by the MEMIT-seq / AlphaEdit solves
    # covariance statistics (docs/engine.md, Covariance (C0); docs/covariance.md)
    mom2_corpus: str | None = None  # None: the built-in WikiText sample
    mom2_n_samples: int = Field(10000, ge=1)
    # which documents: the first N, or a seeded sample (None: random for `wikipedia` as the
    # references draw it, first for every other corpus); part of the statistics' cache key
    mom2_sample: Literal["first", "random", "uniform"] | None = None
    mom2_sample_seed: int = Field(1, ge=0)  # the references' random_sample=1
    mom2_max_len: int = Field(1024, ge=1)
    mom2_dtype: Literal["float32", "float64"] = "float32"
    # sequential editing (docs/engine.md, Sequential editing and K_p)
    preserve_previous: bool = True
    # negation-aware editing (docs/negation-editing.md): "defend" also optimizes the target
    # on the opposite-polarity query (unlikelihood of the new target, KL to the unedited
    # model there); "last-token" reads keys and adds δ at the query's last token.
    negation: Literal["off", "defend"] = "off"
    negation_unlikelihood: float = Field(1.0, ge=0.0)
    # MEMIT's own essence-KL weight: at 1.0 the KL outweighed the target's NLL on the tiny
    # test model and most edits failed.
    negation_kl: float = Field(0.0625, ge=0.0)
    locate: Literal["subject", "last-token"] = "subject"
    # target construction (docs/methods/forward-replay.md): "spread" optimizes z at the last
    # edit layer and spreads z − h over the layers (MEMIT); "forward-replay" (FE) optimizes it
    # at the first edit layer and reads the later layers' targets from one forward with it
    # patched in, each layer taking its full z_l − h_l.
    targets: Literal["spread", "forward-replay"] = "spread"
    # when forward-replay targets are made: on the current model at each batch, or on the
    # unedited model (FE's precompute_z.py), recomputed with the original weights swapped in
    replay_targets: Literal["per-batch", "precomputed"] = "per-batch"
    # keys rows per forward pass
    rows_per_pass: int = Field(128, ge=1)

    @field_validator("layers")
    @classmethod
    def _layers_sorted(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("at least one layer")
        if sorted(set(v)) != v:
            raise ValueError(f"layers must be strictly increasing, got {v}")
        return v

    @field_validator("targets")
    @classmethod
    def _targets_supported(cls, v: str, info: ValidationInfo) -> str:
        if v == "forward-replay" and cls.forward_replay_refusal:
            method = info.data.get("method", "this method")
            raise ValueError(f"{method} cannot use forward-replay targets: {cls.forward_replay_refusal}")
        return v

    @field_validator("kl_prompt")
    @classmethod
    def _kl_prompt_slot(cls, v: str | None) -> str | None:
        # It is filled with each subject in the first batch's target search: a bad one would
        # fail only after the model load and the no-edit baseline.
        return v if v is None else one_subject_slot(v)

    @field_validator("template_groups")
    @classmethod
    def _template_groups(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        # (length in tokens, number of prefixes) per group (editing/lte/context.py): both at
        # least 1, else the prefix generation fails after the model load.
        for i, (length, count) in enumerate(v):
            if length < 1 or count < 1:
                raise ValueError(f"group {i} is {[length, count]}: each group is [length in tokens >= 1, "
                                 "number of prefixes >= 1]")
        return v

    @model_validator(mode="after")
    def _lambda_per_layer(self):
        if isinstance(self.mom2_update_weight, list) and len(self.mom2_update_weight) != len(self.layers):
            raise ValueError("mom2_update_weight as a list needs one value per layer")
        return self

    @model_validator(mode="after")
    def _replay_timing(self):
        if self.replay_targets != "per-batch" and self.targets != "forward-replay":
            raise ValueError("replay_targets: precomputed needs targets: forward-replay (spread targets are made per batch)")
        return self

    def lam(self, layer: int) -> float:
        w = self.mom2_update_weight
        return w[self.layers.index(layer)] if isinstance(w, list) else w

    def check_model(self, n_layers: int) -> None:
        bad = [l for l in self.layers if not 0 <= l < n_layers]
        if bad:
            raise HParamsError(f"{self.method}: edit layers {bad} are outside the model's layers 0..{n_layers - 1}")


def load_hparams_file(path: str | Path, cls: type[LTEHParams], overrides: dict | None = None) -> LTEHParams:
    path = Path(path)
    try:
        raw = load_yaml(path) or {}
    except (OSError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(exc)
        raise HParamsError(f"{path}: cannot read hyperparameters: {reason}") from None
    if not isinstance(raw, dict):
        raise HParamsError(f"{path}: hyperparameters must be a mapping of fields, got a {type(raw).__name__}")
    raw = {**raw, **(overrides or {})}
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        field, message = validation_message(exc)
        top = field.split(".")[0]
        if overrides and top in overrides:  # the culprit is the user's --set, not the file
            raise HParamsError(f"--set {clip(top)}={quoted(overrides[top])}: {message}") from None
        if not field:  # a check of the whole file (e.g. one value per layer)
            raise HParamsError(f"{path}: {message}") from None
        raise HParamsError(f"{path}: field {field!r}: {message}") from None


def hparams_path(method: str, model_key: str) -> Path:
    return HPARAMS_DIR / method / f"{model_key}.yaml"


def available(method: str) -> list[str]:
    return sorted(p.stem for p in (HPARAMS_DIR / method).glob("*.yaml"))
