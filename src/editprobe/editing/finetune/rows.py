"""The parts of ``ft`` (editing/finetune/ft.py) that are not the editor: its settings, its
report types, the statement rows it trains on, and the stand-in that replays the frozen
blocks below the edit layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from ...models.tokens import encode_open, continuation_ids
from ..lte.engine import EditReport, RequestReport
from ..settings.hparams import HParamsError

class FTHParams(BaseModel):
    """Settings of ``ft`` (docs/ft.md); shipped files under editing/settings/hparams/ft/ cite sources."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "ft"
    source: str = Field("", description="where these values come from (paper, repo:path, or our sweep)")
    layers: list[int] | None = None  # None: the middle layer (n_layers // 2)
    lr: float = Field(5e-4, gt=0)
    num_steps: int = Field(25, ge=1)
    norm_constraint: float | None = Field(5e-5, gt=0)  # per weight entry; None: unconstrained
    norm_constraint_around: Literal["original", "batch"] = "original"
    weight_decay: float = Field(0.0, ge=0)
    # augmentation by context prefixes (bare query + n_context prefixes of context_len tokens)
    n_context: int = Field(5, ge=0)
    context_len: int = Field(10, ge=2)
    template_seed: int = 0
    # negation: unlikelihood of the target after the opposite-polarity query
    augment_negation: bool = True
    unlikelihood_weight: float = Field(1.0, ge=0)
    early_stop_loss: float | None = Field(1e-2, ge=0)  # stop when the mean positive NLL is below
    rows_per_pass: int = Field(32, ge=1)  # statements per forward pass (memory)

    @field_validator("layers")
    @classmethod
    def _layers_sorted(cls, v: list[int] | None) -> list[int] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("at least one layer")
        if sorted(set(v)) != v:
            raise ValueError(f"layers must be strictly increasing, got {v}")
        return v

    def check_model(self, n_layers: int) -> None:
        bad = [l for l in self.layers or [] if not 0 <= l < n_layers]
        if bad:
            raise HParamsError(f"{self.method}: edit layers {bad} are outside the model's layers 0..{n_layers - 1}")


class FTRequestReport(RequestReport):
    """``loss``: mean NLL per target token after the bare query, after the batch;
    ``target_prob`` its exp(−loss); ``opposite_prob`` the same after the opposite query
    (None where the request had no negation term)."""

    opposite_prob: float | None = None


class FTEditReport(EditReport):
    requests: list[FTRequestReport]  # narrowed, so a dump of the report keeps opposite_prob
    steps: int  # optimizer steps taken (early stop may end the batch sooner)
    loss_history: list[float]  # the total loss before each step
    negation_terms: int  # requests with an unlikelihood term
    negation_skipped: list[str]  # with augment_negation, ids of requests without one (no opposite query, or untokenizable)


@dataclass
class _Row:
    request: int
    ids: list[int]  # query + target[:-1]: every target token's predicting position exists
    start: int  # position predicting the first target token
    labels: list[int]
    negative: bool  # unlikelihood row (opposite query) rather than an NLL row
    bare: bool  # no context prefix (the rows reported per request)


def _query_rows(tok, request: int, query: str, target: str, prefixes: list[str], negative: bool) -> list[_Row]:
    rows = []
    for i, prefix in enumerate(prefixes):
        text = prefix + query
        q = encode_open(tok, text)  # exactly the prefix continuation_ids (and the probes) see
        labels = continuation_ids(tok, text, target)
        rows.append(_Row(request, q + labels[:-1], len(q) - 1, labels, negative, i == 0))
    return rows


class _Replay(nn.Module):
    """Stands in for a block below the lowest edit layer during the steps: returns the
    recorded output of the last such block (their weights never change, so neither does it)."""

    def __init__(self, block: nn.Module, output) -> None:
        super().__init__()
        self.__dict__["_block"] = block  # a plain attribute, not a submodule
        self.__dict__["_output"] = output

    def forward(self, *args, **kwargs):
        return self._output

    def __getattr__(self, name: str):
        # Some models read per-block attributes in their loop (e.g. attention_type).
        return getattr(self.__dict__["_block"], name)


def _detached(output):
    return tuple(_detached(o) for o in output) if isinstance(output, tuple) else (
        output.detach() if isinstance(output, torch.Tensor) else output)
