"""``external``: an edit made elsewhere, put to the probes as if editprobe had made it.

The editor's "edit" is the edited checkpoint's weights: on the first batch it writes them
into the loaded original model, tensor by tensor (one edited tensor in memory at a time,
so an 8B model is never held twice), keeping on the CPU the original values of only the
tensors that differ; ``restore`` writes those back. A run then measures the original model
first (the baseline), the edited one after the positive stage, and restores: the run loop,
the probes and the report need nothing else (``editprobe evaluate``, docs/evaluate.md).
Its rows are labelled ``external+<label>`` and carry the checkpoint's fingerprint.

It takes part in the positive stage only: the negated edit (NN, NP) is not in a checkpoint.
"""

from __future__ import annotations

import itertools
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from pydantic import BaseModel, ConfigDict

from ..jsontext import dumps
from ..models.checkpoint import CheckpointError, TensorSource, check_fits, fingerprint, module_fingerprint
from ..models.tokens import continuation_ids, open_ids
from ..paths import atomic_path
from .api import EditReport, Editor, RemoteCheck, RequestReport
from .lte.state import read_state_meta
from .plugins import register_method
from .prompts import RequestError, as_request

STATE_VERSION = 1
MEMORY = "memory:"  # a checkpoint reference naming a model in memory (the Python API's)
SETTINGS_FILE = Path(__file__).parent / "settings" / "external.yaml"

# Edited models in memory by reference, while editprobe.evaluate() runs on them.
_IN_MEMORY: dict[str, Any] = {}
_tokens = itertools.count()


@contextmanager
def in_memory(model) -> Iterator[str]:
    """A checkpoint reference (``memory:N``) naming ``model`` for the body's duration."""
    ref = f"{MEMORY}{next(_tokens)}"
    _IN_MEMORY[ref] = model
    try:
        yield ref
    finally:
        _IN_MEMORY.pop(ref, None)


class CheckpointSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "external"
    source: str = ""
    checkpoint: str = ""  # the edited model: a local directory, a hub id, or memory:N (the Python API)
    label: str | None = None  # shown beside "external" in every table
    fingerprint: str | None = None  # the checkpoint's, when known: checked before any work

    def check_model(self, n_layers: int) -> None:
        """Nothing per layer: whether the weights fit is checked against the loaded model."""


def tensor_source(hp: CheckpointSettings) -> TensorSource:
    """Where the edited weights are read from; one line when nowhere."""
    if not hp.checkpoint:
        raise CheckpointError("external: no checkpoint given (--set checkpoint=DIR, or editprobe evaluate --edited)")
    if hp.checkpoint.startswith(MEMORY):
        if hp.checkpoint not in _IN_MEMORY:
            raise CheckpointError(f"external: {hp.checkpoint} names no model in memory any more")
        return TensorSource.of_module(_IN_MEMORY[hp.checkpoint])
    from ..models.checkpoint import resolve_checkpoint

    return TensorSource(resolve_checkpoint(hp.checkpoint, option="checkpoint"))


def source_fingerprint(source: TensorSource) -> str:
    return module_fingerprint(source.module) if source.module is not None else fingerprint(source.directory)


def check_checkpoint(hp: CheckpointSettings, model) -> None:
    """Before any work: the weights fit ``model`` and are the ones the settings name."""
    source = tensor_source(hp)
    check_fits(source, model, f"edited checkpoint {hp.checkpoint}")
    if hp.fingerprint is not None and source_fingerprint(source) != hp.fingerprint:
        raise CheckpointError(f"edited checkpoint {hp.checkpoint}: its fingerprint is not {hp.fingerprint[:12]}… any "
                              "more (the files changed since the run began); start a new run")


@register_method
class CheckpointEditor(Editor):
    name = "external"
    hparams_cls = CheckpointSettings
    edit_stages = ("positive",)  # a checkpoint holds the positive edit only: NN and NP are "–"
    seed_fields = ()

    def __init__(self, model, tokenizer, hparams: CheckpointSettings, model_id: str | None = None):
        self.model, self.tok, self.hp = model, tokenizer, hparams
        self._originals: dict[str, torch.Tensor] = {}  # CPU copies of the tensors swapped in
        self._swapped = False
        self.batches = 0

    # --- the edit: the checkpoint's weights -------------------------------------------------------
    def apply(self, requests: list) -> EditReport:
        requests = [as_request(r, i) for i, r in enumerate(requests)]
        if not requests:
            raise RequestError("empty batch of requests")
        if not self._swapped:
            self._swap_in()
        self.batches += 1
        return EditReport(method=self.name, batch=self.batches, n_requests=len(requests),
                          requests=[self._request_report(r) for r in requests], layers=[], timings={})

    @torch.no_grad()
    def _swap_in(self) -> None:
        state = self.model.state_dict()
        try:
            for key, edited in tensor_source(self.hp).tensors():
                target = state[key]
                edited = edited.to(device=target.device, dtype=target.dtype)
                if torch.equal(target, edited):
                    continue
                self._originals.setdefault(key, target.detach().to("cpu", copy=True))
                target.copy_(edited)
        except BaseException:
            self._put_back()  # a failed swap leaves the original model
            raise
        self._swapped = True

    @torch.no_grad()
    def _put_back(self) -> None:
        state = self.model.state_dict()
        for key, original in self._originals.items():
            state[key].copy_(original.to(state[key].device))
        self._originals.clear()
        self._swapped = False

    @torch.no_grad()
    def _request_report(self, request) -> RequestReport:
        """The target's probability after the query on the edited model."""
        prefix, target = open_ids(self.tok, request.query), continuation_ids(self.tok, request.query, request.target)
        ids = torch.tensor([prefix + target], device=next(self.model.parameters()).device)
        logits = self.model(input_ids=ids).logits[0, len(prefix) - 1:-1].float()
        nll = float(-logits.log_softmax(-1)[torch.arange(len(target)), torch.tensor(target)].mean())
        return RequestReport(id=request.id, loss=nll, target_prob=math.exp(-nll), steps=0)

    def restore(self) -> None:
        self._put_back()
        self.batches = 0

    # --- what a run records and checks -------------------------------------------------------------
    def variant(self) -> str | None:
        return self.hp.label

    def provenance(self) -> dict[str, Any]:
        hp = self.hp.model_dump(mode="json")
        if hp.get("fingerprint") is None:  # a run without one given: the one measured
            hp["fingerprint"] = source_fingerprint(tensor_source(self.hp))
        return {"hparams": hp, "variant": self.variant(), "c0": None}

    @classmethod
    def requirements(cls, hparams: BaseModel, model, tokenizer, model_id: str) -> list[RemoteCheck]:
        return [RemoteCheck("edited checkpoint", lambda: check_checkpoint(hparams, model))]

    # --- checkpointing ------------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            state = {"method": self.name, "version": STATE_VERSION, "batches": self.batches,
                     "swapped": self._swapped, "checkpoint": self.hp.checkpoint}
            (tmp / "state.json").write_text(dumps(state, directory / "state.json"))
        return directory

    def load_state(self, directory: str | Path) -> None:
        state = read_state_meta(Path(directory), self.name, versions=(STATE_VERSION,))
        if state["swapped"] and not self._swapped:
            self._swap_in()
        self.batches = int(state["batches"])


__all__ = ["CheckpointEditor", "CheckpointSettings", "SETTINGS_FILE", "in_memory"]
