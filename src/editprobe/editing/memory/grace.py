"""``grace``: GRACE, a codebook of key → value replacements at one module (docs/grace.md).

Hartvigsen et al., "Aging with GRACE: Lifelong Model Editing with Discrete Key-Value
Adaptors" (NeurIPS 2023), written for this package; EasyEdit's ``easyeditor/models/grace``
was read for its settings and names. One module (the MLP output projection of ``layer``, as
EasyEdit's ``inner_params``) gets a forward hook. An edit's key is that module's input at
the last token of the edit prompt; its value, an output vector trained by Adam for
``n_iter`` steps so that the model, with the module's output replaced by it there, gives the
target. At query time a decoding step (a prompt's last token; in a teacher-forced pass, every
position from the query's last token on: models/decoding.py) whose input lies within the
radius of its nearest key gets that key's value; elsewhere the module runs as it is
(deferral). The weights never change: the edit lives in the codebook and the hooks, which
stay on the model from ``apply`` to ``restore``, so every probe asks the edited model.
"""

from __future__ import annotations

import time
import zlib
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from ...data.records import EditRequest
from ...models.adapters import get_adapter
from ...models.decoding import decoding_from, decoding_positions
from ...models.hooks import frozen_parameters
from ...models.tokens import TokenizationError, continuation_ids, encode_open, make_batch
from ..api import EditReport, Editor, RequestReport, TrainedForm
from ..lte.state import StateError, read_editor_state, write_editor_state
from ..plugins import register_method
from ..prompts import RequestError, as_batch
from ..settings.hparams import HParamsError
from .codebook import Codebook, Placement

STATE_VERSION = 1


class GraceHParams(BaseModel):
    """Settings of ``grace`` (docs/grace.md); EasyEdit's names where it has the setting."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "grace"
    source: str = Field("", description="where these values come from (paper, repo:path, or our sweep)")
    layer: int | None = None  # the block whose MLP output projection is adapted; None: 3/4 of the depth
    eps: float = Field(1.0, gt=0)  # a new key's deferral radius (Euclidean, on the module's input)
    eps_expand: Literal["coverage", "moving_average"] = "coverage"
    edit_lr: float = Field(1.0, gt=0)  # Adam's learning rate for the values
    n_iter: int = Field(50, ge=1)
    val_init: Literal["cold", "warm"] = "cold"  # cold: uniform [0, 1) (seeded); warm: the module's output
    # Only GRACE's default: replace the output at the positions whose key hits. EasyEdit's
    # replace_all / replace_prompt need to know where a pass's query ends, which a probe's
    # teacher-forced pass over query + target does not say.
    replacement: Literal["replace_last"] = "replace_last"
    early_stop_loss: float | None = Field(None, ge=0)  # stop when the batch's mean NLL is below; None: n_iter
    seed: int = 0  # the cold values' draws

    def check_model(self, n_layers: int) -> None:
        if self.layer is not None and not 0 <= self.layer < n_layers:
            raise HParamsError(f"{self.method}: layer {self.layer} is outside the model's layers 0..{n_layers - 1}")


class GraceRequestReport(RequestReport):
    """``loss``: mean NLL per target token after the edit prompt, after the batch;
    ``placement``: what the edit did to the codebook (added, expanded, split, covered)."""

    placement: str
    entry: int


class GraceEditReport(EditReport):
    requests: list[GraceRequestReport]
    n_keys: int  # codebook entries after the batch
    loss_history: list[float]


class _Row:
    """One edit prompt + target, teacher-forced: ``ids`` = query + target[:-1]."""

    def __init__(self, tok, request: EditRequest):
        query = encode_open(tok, request.query)  # exactly the ids the probes ask with
        try:
            self.labels = continuation_ids(tok, request.query, request.target)
        except TokenizationError as exc:
            raise RequestError(f"request {request.id}: {exc}") from None
        self.ids = query + self.labels[:-1]
        self.key_position = len(query) - 1  # the edit prompt's last token: the key, and where the target starts


@register_method
class GraceEditor(Editor):
    name = "grace"
    hparams_cls = GraceHParams
    trains_on = frozenset({TrainedForm.POSITIVE})  # the edit prompt alone, no prefixes or paraphrases
    seed_fields = ("seed",)
    edit_in_weights = False  # the edit is the codebook, consulted by a hook

    def __init__(self, model: nn.Module, tokenizer, hparams: GraceHParams, adapter=None, model_id: str | None = None):
        self.model, self.tok = model, tokenizer
        self.adapter = adapter or get_adapter(model)
        if not isinstance(hparams, GraceHParams):
            hparams = GraceHParams.model_validate(hparams.model_dump() if isinstance(hparams, BaseModel) else hparams)
        n_layers = self.adapter.n_layers(model)
        hparams.check_model(n_layers)
        if hparams.layer is None:
            hparams = hparams.model_copy(update={"layer": (3 * n_layers) // 4})
        self.hp = hparams
        self.device = next(model.parameters()).device
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self.module = model.get_submodule(self.adapter.path("mlp_out", hparams.layer))
        self.codebook: Codebook | None = None
        self._hooks: list = []
        self._steps: torch.Tensor | None = None  # the current pass's decoding steps (rows, width)
        self._training: tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]] | None = None  # values, forced
        self._batches = self._n_edits = 0

    # --- the hooks ----------------------------------------------------------------------------
    def _note_steps(self, _model, args, kwargs):
        """Before each forward of the model: which of its positions are decoding steps."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"]
        self._steps = decoding_positions(ids, kwargs.get("attention_mask"))

    def _forget_steps(self, *_args) -> None:
        self._steps = None

    def _route(self, _module, args, kwargs, output):
        inputs = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
        # A call that bypassed the model's forward (a submodule run alone): each row's last position.
        steps = self._steps if self._steps is not None else decoding_positions(inputs[..., 0], None)
        eligible = steps.reshape(-1)
        if self._training is None:
            return self.codebook.route(inputs, output, eligible)
        values, forced = self._training
        return self.codebook.route(inputs, output, eligible, values, forced)

    def _attach(self) -> None:
        if not self._hooks:
            self._hooks = [self.model.register_forward_pre_hook(self._note_steps, with_kwargs=True),
                           self.model.register_forward_hook(self._forget_steps, always_call=True),
                           self.module.register_forward_hook(self._route, with_kwargs=True)]

    def _detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []
        self._steps = None

    # --- keys and values ----------------------------------------------------------------------
    @torch.no_grad()
    def _keys_and_outputs(self, rows: list[_Row]) -> tuple[torch.Tensor, torch.Tensor]:
        """The module's input and (codebook aside) output at each row's key position."""
        batch = make_batch(self.tok, [r.ids for r in rows], "right").to(self.device)
        seen = {}

        def record(_module, args, kwargs, output):
            seen["in"], seen["out"] = (args[0] if args else next(iter(kwargs.values()))), output

        self._detach()
        handle = self.module.register_forward_hook(record, with_kwargs=True)
        try:
            self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        finally:
            handle.remove()
            if self.codebook is not None and len(self.codebook):
                self._attach()
        at = (torch.arange(len(rows), device=self.device), torch.tensor([r.key_position for r in rows], device=self.device))
        return seen["in"][at].float(), seen["out"][at].float()

    def _initial_value(self, output: torch.Tensor, edit_index: int) -> torch.Tensor:
        if self.hp.val_init == "warm":
            return output.clone()
        # Seeded by the edit's place in the whole sequence of edits, so a resumed run draws the same.
        gen = torch.Generator().manual_seed(zlib.crc32(f"grace:{self.hp.seed}:{edit_index}".encode()))
        return torch.rand(output.shape[-1], generator=gen).to(self.device)

    def _loss(self, rows: list[_Row], values: torch.Tensor, forced) -> torch.Tensor:
        """Per row: mean NLL of the target tokens with the codebook (``values``) in place."""
        batch = make_batch(self.tok, [r.ids for r in rows], "right").to(self.device)
        self._training = (values, forced)
        try:
            # As the probes ask: each position from the edit prompt's last token on is a step.
            with decoding_from([r.key_position for r in rows]):
                logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                    use_cache=False).logits
        finally:
            self._training = None
        losses = []
        for i, r in enumerate(rows):
            window = logits[i, r.key_position: r.key_position + len(r.labels)].float()
            losses.append(nn.functional.cross_entropy(window, torch.tensor(r.labels, device=self.device)))
        return torch.stack(losses)

    def _train(self, rows: list[_Row], entries: list[int]) -> tuple[list[float], int, list[float]]:
        """Adam on the values of ``entries`` (one per row; rows may share one), everything else
        frozen; the codebook's values are replaced by the trained ones at the end."""
        trained = sorted(set(entries))
        param = nn.Parameter(self.codebook.values[trained].clone())
        width = max(len(r.ids) for r in rows)
        forced = (torch.tensor([i * width + r.key_position for i, r in enumerate(rows)], device=self.device),
                  torch.tensor(entries, device=self.device))
        index = torch.tensor(trained, device=self.device)
        opt = torch.optim.Adam([param], lr=self.hp.edit_lr)
        history: list[float] = []
        steps = 0
        with frozen_parameters(self.model):
            for _ in range(self.hp.n_iter):
                opt.zero_grad(set_to_none=True)
                loss = self._loss(rows, self.codebook.values.index_put((index,), param), forced).mean()
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"grace: non-finite loss at step {steps}")
                history.append(float(loss.detach()))
                if self.hp.early_stop_loss is not None and history[-1] < self.hp.early_stop_loss:
                    break
                loss.backward()
                opt.step()
                steps += 1
        self.codebook.values = self.codebook.values.index_put((index,), param.detach())
        with torch.no_grad():
            final = self._loss(rows, self.codebook.values, forced)
        return final.tolist(), steps, history

    # --- the editor contract ------------------------------------------------------------------
    def apply(self, requests: list[EditRequest]) -> GraceEditReport:
        """Place the batch's edits in the codebook and train their values; on any error the
        codebook (and so the model) is left exactly as before the batch."""
        requests = as_batch(requests)
        rows = [_Row(self.tok, r) for r in requests]
        before = self.codebook.clone() if self.codebook is not None else None
        timings: dict[str, float] = {}
        try:
            t = time.perf_counter()
            keys, outputs = self._keys_and_outputs(rows)
            if self.codebook is None:
                self.codebook = Codebook.empty(keys.shape[-1], outputs.shape[-1], self.device)
            placed: list[tuple[int, Placement]] = [
                self.codebook.place(keys[i], self._initial_value(outputs[i], self._n_edits + i), tuple(row.labels),
                                    requests[i].id, self.hp.eps, self.hp.eps_expand)
                for i, row in enumerate(rows)]
            self._attach()
            timings["place_s"] = time.perf_counter() - t
            t = time.perf_counter()
            losses, steps, history = self._train(rows, [e for e, _ in placed])
            timings["train_s"] = time.perf_counter() - t
        except BaseException:
            self.codebook = before
            if before is None or not len(before):
                self._detach()
            raise
        self._batches += 1
        self._n_edits += len(requests)
        reports = [GraceRequestReport(id=req.id, loss=loss, target_prob=float(torch.exp(torch.tensor(-loss))),
                                      steps=steps, placement=how, entry=entry)
                   for req, loss, (entry, how) in zip(requests, losses, placed)]
        return GraceEditReport(method=self.name, batch=self._batches, n_requests=len(requests), requests=reports,
                               layers=[], timings=timings, n_keys=len(self.codebook), loss_history=history)

    def restore(self) -> None:
        """Remove the hook and forget the codebook: the model is the unedited one again."""
        self._detach()
        self.codebook = None
        self._batches = self._n_edits = 0

    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """The codebook (keys, values, radii, targets' ids) and what made it (GRACE has no statistics)."""
        directory = Path(directory)
        tensors = self.codebook.tensors() if self.codebook is not None else {}
        return write_editor_state(
            directory, self, STATE_VERSION, "codebook.safetensors", tensors, batches=self._batches,
            n_edits=self._n_edits, edit_ids=self.codebook.edit_ids if self.codebook is not None else [])

    def load_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        meta, tensors = read_editor_state(directory, self, STATE_VERSION, "codebook.safetensors", "codebook")
        if meta["hparams"]["layer"] != self.hp.layer:
            raise StateError(f"{directory}: codebook at layer {meta['hparams']['layer']}, not {self.hp.layer}")
        self.restore()
        if tensors:
            self.codebook = Codebook.from_tensors(tensors, meta["edit_ids"], self.device)
            self._attach()
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]
