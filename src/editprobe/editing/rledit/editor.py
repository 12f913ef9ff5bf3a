"""RLEdit behind the editor interface: ``apply`` a batch, ``restore``, ``deltas``, save and load.

A batch is cached on the model as it is now (keys and value gradients at the answer
positions, as RLEdit's ``cache``, which also merges them into the hypernetwork's running
normalisers — at editing time too, so the normalisers are part of the editing state), then
each edit module gets its shift S (``Hypernetwork.shift``) added to its weight, written from
an fp32 master copy by the editor's weight ledger (keyed by module path) as the LTE editors'."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pydantic import BaseModel, ConfigDict

from ...jsontext import dumps
from ...paths import atomic_path
from ..api import EditReport, Editor, RemoteCheck, RequestReport, TrainedForm
from ..ledger import WeightLedger
from ..plugins import register_method
from ..prompts import as_request
from .cache import answer_loss, keys_and_value_grads, teacher_forced
from .hypernet import Hypernetwork, HypernetError

STATE_VERSION = 1


class RLEditHParams(BaseModel):
    """What a run needs to edit with RLEdit: the trained hypernetwork (``--set hypernet=DIR``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "rledit"
    source: str = ""
    hypernet: str | None = None  # OUT/hypernet of `editprobe train rledit`; None: the cached default

    def check_model(self, n_layers: int) -> None:
        """Checked against the model's modules when the editor is built."""

    def hypernetwork(self, model, model_id: str | None) -> Hypernetwork:
        """``hypernet``, or when unset the cached network of the model's default training."""
        from .store import default_hypernet

        if self.hypernet is not None:
            return Hypernetwork.load(self.hypernet)[0]
        return default_hypernet(model, model_id)


def edit_modules(model: nn.Module, adapter, settings) -> dict[str, nn.Module]:
    """{full path: module} of the modules RLEdit edits (nn.Linear only)."""
    out = {}
    for layer in settings.layers:
        block = adapter.path("block", layer)
        for rel in settings.modules:
            name = f"{block}.{rel}"
            try:
                module = model.get_submodule(name)
            except AttributeError:
                raise HypernetError(f"RLEdit edit module {rel!r} does not exist in layer {layer} ({name})") from None
            if not isinstance(module, nn.Linear):
                raise HypernetError(f"RLEdit edits nn.Linear modules; {name} is a {type(module).__name__}")
            out[name] = module
    return out


def module_shapes(modules: dict[str, nn.Module]) -> dict[str, tuple[int, int]]:
    return {name: (m.in_features, m.out_features) for name, m in modules.items()}


@register_method
class RLEditEditor(Editor):
    name = "rledit"
    hparams_cls = RLEditHParams
    uses_preserved_keys = False
    needs_covariance = False
    edit_stages = ("positive",)  # the paper reports PP and PN only: no negated-request run
    # Editing with a trained network draws nothing: the network's ``seed`` seeds its
    # initialization in training (`train rledit`), so a run's seed leaves the network alone.
    seed_fields: ClassVar[tuple[str, ...]] = ()
    # A shift is computed from the edit prompt; the hypernetwork was trained to make each
    # training edit's equivalent (paraphrase) prompts give the new answer (rledit/train.py).
    trains_on = frozenset({TrainedForm.POSITIVE, TrainedForm.PARAPHRASE})

    @classmethod
    def requirements(cls, hparams, model, tokenizer, model_id: str) -> list[RemoteCheck]:
        """The trained network (``hypernet``, or the cached default): a run without one stops
        before any work, naming how to train it."""
        return [RemoteCheck("RLEdit hypernetwork", lambda: hparams.hypernetwork(model, model_id) and None)]

    def __init__(self, model: nn.Module, tokenizer, hypernet: Hypernetwork | RLEditHParams, adapter=None,
                 model_id: str | None = None) -> None:
        from ...models.adapters import get_adapter

        self.hp = hypernet if isinstance(hypernet, RLEditHParams) else RLEditHParams()
        if isinstance(hypernet, RLEditHParams):
            hypernet = hypernet.hypernetwork(model, model_id)
        self.model, self.tok, self.hypernet = model, tokenizer, hypernet
        self.model_id = model_id
        self.adapter = adapter or get_adapter(model)
        self.modules = edit_modules(model, self.adapter, hypernet.settings)
        if module_shapes(self.modules) != hypernet.shapes:
            raise HypernetError("the hypernetwork was trained for other edit modules or shapes than this model has")
        self.device = next(model.parameters()).device
        self.hypernet.to(self.device)
        self._trained_norms = self._norms()
        self.ledger: WeightLedger[str] = WeightLedger(self._module_weight)
        self._batches = self._n_edits = 0

    def _module_weight(self, name: str) -> torch.Tensor:
        return self.modules[name].weight

    def _norms(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.hypernet.state_dict().items() if ".normalizer." in k}

    def _set_norms(self, norms: dict[str, torch.Tensor]) -> None:
        self.hypernet.load_state_dict({**self.hypernet.state_dict(), **{k: v.to(self.device) for k, v in norms.items()}})

    def restore_keeping_normalizers(self) -> None:
        """``restore``, with the normalisers merged so far made the baseline it returns to
        (the end of training: they are part of the trained network)."""
        trained = self._norms()
        self.restore()
        self._trained_norms = trained
        self._set_norms(trained)

    # --- editing ------------------------------------------------------------------------------
    def shifts(self, requests) -> dict[str, torch.Tensor]:
        """Each module's shift for these requests on the model as it is now (normalisers merged)."""
        requests = [as_request(r, i) for i, r in enumerate(requests)]
        batch = teacher_forced(self.tok, [(r.template.format(r.subject), r.target) for r in requests], self.device)
        cached = keys_and_value_grads(self.model, self.modules, batch)
        for name, (keys, grads) in cached.items():
            net, _ = self.hypernet.net_of(name)
            net.normalizer.update(torch.cat((keys, grads), -1))
        with torch.no_grad():
            return {name: self.hypernet.shift(name, keys, grads) for name, (keys, grads) in cached.items()}

    def write(self, shifts: dict[str, torch.Tensor]) -> None:
        for name, shift in shifts.items():
            self.ledger.add(name, shift.T)  # nn.Linear stores [out, in]

    def apply(self, requests) -> EditReport:
        """Edit the model with one batch; a failed batch leaves the editor as it was."""
        import time

        requests = [as_request(r, i) for i, r in enumerate(requests)]
        started = time.perf_counter()
        norms = self._norms()
        try:
            shifts = self.shifts(requests)
            if not all(torch.isfinite(s).all() for s in shifts.values()):
                raise FloatingPointError("rledit: a parameter shift has NaN/inf")
        except BaseException:
            self._set_norms(norms)
            raise
        self.write(shifts)
        self._batches += 1
        self._n_edits += len(requests)
        return EditReport(method=self.name, batch=self._batches, n_requests=len(requests),
                          requests=self._request_reports(requests), layers=[],
                          timings={"edit_s": time.perf_counter() - started})

    @torch.no_grad()
    def _request_reports(self, requests) -> list[RequestReport]:
        """Each request's answer loss and mean answer-token probability after the shift."""
        out = []
        for r in requests:
            batch = teacher_forced(self.tok, [(r.template.format(r.subject), r.target)], self.device)
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            loss = float(answer_loss(logits, batch))
            n_tokens = int(batch.answer.sum())
            out.append(RequestReport(id=r.id, loss=loss, target_prob=float(torch.exp(torch.tensor(-loss / n_tokens))),
                                     steps=0))
        return out

    def prepare(self) -> None:
        """Nothing to compute before the first batch (no covariance statistics)."""

    def finalize(self) -> dict:
        return {}

    def restore(self) -> None:
        self.ledger.restore()
        self._batches = self._n_edits = 0
        self._set_norms(self._trained_norms)

    @property
    def deltas(self) -> dict[str, torch.Tensor]:
        return self.ledger.deltas

    # --- state --------------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        directory = Path(directory)
        with atomic_path(directory) as tmp:
            tmp.mkdir(parents=True)
            save_file(self.ledger.tensors(), tmp / "deltas.safetensors")
            save_file({k: v.contiguous().cpu() for k, v in self._norms().items()}, tmp / "normalizers.safetensors")
            (tmp / "state.json").write_text(dumps({
                "version": STATE_VERSION, "method": self.name, "model_type": self.model.config.model_type,
                "batches": self._batches, "n_edits": self._n_edits,
                "settings": self.hypernet.settings.model_dump(mode="json")}, directory / "state.json", indent=2))
        return directory

    def load_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        try:
            meta = json.loads((directory / "state.json").read_text())
            deltas = load_file(directory / "deltas.safetensors")
            norms = load_file(directory / "normalizers.safetensors")
        except (OSError, ValueError) as exc:
            raise HypernetError(f"{directory}: not an RLEdit editor state ({exc})") from None
        if meta.get("method") != self.name or meta.get("version") != STATE_VERSION:
            raise HypernetError(f"{directory}: state of {meta.get('method')!r} version {meta.get('version')}, "
                                f"not rledit version {STATE_VERSION}")
        self.restore()
        self.ledger.load(deltas, key_of=str)
        self._set_norms(norms)
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]
