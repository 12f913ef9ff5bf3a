"""``ft``: constrained fine-tuning of MLP output projections, with augmentation (docs/ft.md).

The FT-L / FT-M baseline of the editing literature (EasyEdit's ``FT``), written for this
package: for one batch of requests, Adam fine-tunes the MLP output projection weight of each
edit layer (everything else frozen) for ``num_steps`` steps on

- the edit statements, teacher-forced on the target tokens only (FT-M), bare and behind
  ``n_context`` short prefixes sampled from the model (the LTE methods' context templates;
  never the records' paraphrase prompts, which the evaluation scores);
- when ``augment_negation``, the request's opposite-polarity query ("… is not") followed by
  the same target, with an unlikelihood loss −log(1 − p) on the target tokens, so the edit
  does not also make the negated query give the new object.

After each step every weight entry is clamped to within ``norm_constraint`` of the weight
before any edit of this editor (``norm_constraint_around: original``) or before this batch
(``batch``, EasyEdit's choice). The optimization runs on an fp32 master copy; the model gets
``(W_original + Σ deltas).to(its dtype)`` from the editor's weight ledger, as the LTE editors'
(editing/ledger.py).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import torch
from pydantic import BaseModel
from torch import nn

from ...data.negation import negate
from ...data.records import EditRequest
from ...models.adapters import get_adapter
from ...models.hooks import frozen_parameters
from ...models.tokens import TokenizationError, make_batch
from ..api import Editor, TrainedForm
from ..lte.context import ContextTemplates, TemplateSpec, generate_templates
from ..ledger import WeightLedger
from ..plugins import register_method
from ..prompts import RequestError, as_batch, chunks
from ..lte.state import StateError, read_editor_state, write_editor_state

STATE_VERSION = 1


from .rows import FTEditReport, FTHParams, FTRequestReport, _Row, _detached, _query_rows, _Replay  # noqa: F401 (FTHParams etc. are public here too)


@register_method
class FTEditor(Editor):
    name = "ft"
    hparams_cls = FTHParams
    uses_preserved_keys = False
    needs_covariance = False
    edit_stages = ("positive", "negative")
    # the bare edit statement always; trained_forms() adds the prefixed and negated rows
    trains_on = frozenset({TrainedForm.POSITIVE})

    def __init__(self, model: nn.Module, tokenizer, hparams: FTHParams, adapter=None, model_id: str | None = None):
        self.model, self.tok = model, tokenizer
        self.adapter = adapter or get_adapter(model)
        if not isinstance(hparams, FTHParams):
            hparams = FTHParams.model_validate(hparams.model_dump() if isinstance(hparams, BaseModel) else hparams)
        n_layers = self.adapter.n_layers(model)
        hparams.check_model(n_layers)
        if hparams.layers is None:
            hparams = hparams.model_copy(update={"layers": [n_layers // 2]})
        self.hp = hparams
        self.device = next(model.parameters()).device
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self._templates: ContextTemplates | None = None
        self.ledger: WeightLedger[int] = WeightLedger(partial(self.adapter.edit_weight, model))  # keyed by layer
        self._batches = self._n_edits = 0

    @property
    def layers(self) -> list[int]:
        return list(self.hp.layers)

    def _param_name(self, layer: int) -> str:
        return f"{self.adapter.path('mlp_out', layer)}.weight"

    # --- augmentation -------------------------------------------------------------------------
    def templates(self) -> ContextTemplates:
        """The bare ``{}`` and ``n_context`` sampled prefixes, made once on the unedited model."""
        if self._templates is None:
            if self.hp.n_context == 0:
                self._templates = ContextTemplates(groups=(("{}",),))
            else:
                spec = TemplateSpec(groups=((self.hp.context_len, self.hp.n_context),))
                self._templates = generate_templates(self.model, self.tok, spec, seed=self.hp.template_seed)
        return self._templates

    def opposite(self, request: EditRequest) -> str | None:
        """The opposite-polarity template: the request's, else the negation rules' (or None)."""
        if request.opposite_template is not None:
            return request.opposite_template
        negation = negate(request.template)
        return negation.negated if negation.ok else None

    def rows(self, requests: list[EditRequest]) -> tuple[list[_Row], list[str]]:
        """Every training statement of the batch, and the ids of requests without a negation term."""
        prefixes = [t[: t.index("{}")] for t in self.templates().all]
        rows: list[_Row] = []
        skipped: list[str] = []
        for r, req in enumerate(requests):
            try:
                rows += _query_rows(self.tok, r, req.query, req.target, prefixes, negative=False)
            except TokenizationError as exc:
                raise RequestError(f"request {req.id}: {exc}") from None
            if not self.hp.augment_negation:
                continue
            opposite = self.opposite(req)
            if opposite is None:
                skipped.append(req.id)
                continue
            try:
                rows += _query_rows(self.tok, r, opposite.format(req.subject), req.target, prefixes, negative=True)
            except TokenizationError:  # e.g. the opposite query's last token merges with the target
                skipped.append(req.id)
        return rows, skipped

    # --- the loss -----------------------------------------------------------------------------
    def _row_losses(self, weights: dict[str, torch.Tensor], rows: list[_Row], below=None, record: bool = False):
        """Per row: mean over target tokens of the NLL (positive rows) or of −log(1 − p)
        (negative rows), with the edit weights replaced by ``weights``. ``below``: the
        recorded output of the blocks under the lowest edit layer, replayed instead of
        running them; ``record``: also return that output from this pass."""
        batch = make_batch(self.tok, [r.ids for r in rows], "right").to(self.device)
        row_idx = torch.tensor([i for i, r in enumerate(rows) for _ in r.labels], device=self.device)
        pos_idx = torch.tensor([r.start + k for r in rows for k in range(len(r.labels))], device=self.device)
        labels = torch.tensor([y for r in rows for y in r.labels], device=self.device)

        def only_target_positions(_module, args):
            # The unembedding runs on the positions that predict target tokens only: the
            # full-vocabulary logits of every position would dominate time and memory.
            return (args[0][row_idx, pos_idx].unsqueeze(0),) + tuple(args[1:])

        recorded = []
        head = self.model.get_submodule(self.adapter.path("lm_head"))
        hooks = [head.register_forward_pre_hook(only_target_positions)]
        blocks = self.adapter.block_list(self.model)
        low = min(self.layers)
        if record and low > 0:
            hooks.append(blocks[low - 1].register_forward_hook(lambda _m, _a, out: recorded.append(_detached(out))))
        replaced = list(blocks[:low]) if below is not None else []
        try:
            for i, block in enumerate(replaced):
                blocks[i] = _Replay(block, below)
            logits = torch.func.functional_call(
                self.model, weights, (), {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask,
                                          "use_cache": False}, strict=False).logits[0].float()
        finally:
            for i, block in enumerate(replaced):
                blocks[i] = block
            for hook in hooks:
                hook.remove()
        lse = torch.logsumexp(logits, -1)
        picked = logits.gather(-1, labels[:, None]).squeeze(-1)
        nll = lse - picked
        # log(1 − p) as log Σ_{v≠y} e^{z_v} − log Σ_v e^{z_v}: finite even when p rounds to 1
        others = logits.scatter(-1, labels[:, None], float("-inf"))
        unlikely = lse - torch.logsumexp(others, -1)
        negative = torch.tensor([r.negative for r in rows], device=self.device)[row_idx]
        per_token = torch.where(negative, unlikely, nll)
        sums = torch.zeros(len(rows), device=self.device).index_add(0, row_idx, per_token)
        counts = torch.tensor([len(r.labels) for r in rows], device=self.device, dtype=torch.float32)
        if record:
            return sums / counts, (recorded[0] if recorded else None)
        return sums / counts

    @torch.no_grad()
    def _record_below(self, weights: dict[str, torch.Tensor], parts: list[list[_Row]]) -> list | None:
        """Each part's output of the blocks under the lowest edit layer, recorded once per
        batch so the steps run only the blocks above; None (run every block) when there is
        nothing below or when replaying does not reproduce a full pass of this model."""
        if min(self.layers) == 0:
            return None
        outputs = []
        for i, part in enumerate(parts):
            full, below = self._row_losses(weights, part, record=True)
            if below is None:
                return None
            if i == 0 and not torch.allclose(self._row_losses(weights, part, below), full, rtol=1e-4, atol=1e-6):
                return None
            outputs.append(below)
        return outputs

    def _masters(self) -> dict[int, torch.Tensor]:
        """New fp32 copies of the edit weights as the ledger has them: W_original + Σ deltas."""
        return {layer: self.ledger.master(layer) for layer in self.layers}

    def _train(self, rows: list[_Row]) -> tuple[dict[int, torch.Tensor], int, list[float]]:
        """The batch's fine-tuning on fp32 masters; returns the new fp32 weights per layer."""
        hp = self.hp
        start = self._masters()
        if hp.norm_constraint is None:
            bounds = None
        else:
            centre = start if hp.norm_constraint_around == "batch" else {l: self.ledger.original(l) for l in self.layers}
            bounds = {l: (c - hp.norm_constraint, c + hp.norm_constraint) for l, c in centre.items()}
        params = {l: w.clone().requires_grad_(True) for l, w in start.items()}
        dtypes = {l: self.adapter.edit_weight(self.model, l).dtype for l in self.layers}
        opt = torch.optim.Adam(list(params.values()), lr=hp.lr, weight_decay=hp.weight_decay)
        n_pos = sum(not r.negative for r in rows)
        n_neg = len(rows) - n_pos
        # Each row's share of the total: mean over positive rows + weight × mean over negative rows.
        scale = torch.tensor([1.0 / n_pos if not r.negative else hp.unlikelihood_weight / n_neg for r in rows],
                             device=self.device)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i].ids))  # similar lengths, less padding
        parts = list(chunks(order, hp.rows_per_pass))
        history: list[float] = []
        steps = 0
        with frozen_parameters(self.model):
            below = self._record_below({self._param_name(l): p.to(dtypes[l]) for l, p in params.items()},
                                       [[rows[i] for i in part] for part in parts])
            for step in range(hp.num_steps):
                opt.zero_grad(set_to_none=True)
                total = pos_total = 0.0
                for j, part in enumerate(parts):
                    weights = {self._param_name(l): p.to(dtypes[l]) for l, p in params.items()}
                    losses = self._row_losses(weights, [rows[i] for i in part], below[j] if below else None)
                    if not torch.isfinite(losses).all():
                        raise FloatingPointError(f"ft: non-finite loss at step {step}")
                    weighted = losses * scale[part]
                    weighted.sum().backward()
                    total += float(weighted.detach().sum())
                    pos_total += float(weighted.detach()[[not rows[i].negative for i in part]].sum())
                history.append(total)
                if hp.early_stop_loss is not None and pos_total < hp.early_stop_loss:
                    break
                opt.step()
                steps += 1
                if bounds is not None:
                    with torch.no_grad():
                        for l, p in params.items():
                            p.copy_(torch.clamp(p, *bounds[l]))
        new = {l: p.detach() for l, p in params.items()}
        if not all(torch.isfinite(w).all() for w in new.values()):
            raise FloatingPointError("ft: a fine-tuned weight has NaN/inf")
        return new, steps, history

    # --- writing ------------------------------------------------------------------------------
    def apply(self, requests: list[EditRequest]) -> FTEditReport:
        """Edit the model in place with one batch; on any error the model and the editor
        are left exactly as before the batch."""
        requests = as_batch(requests)
        timings: dict[str, float] = {}
        t = time.perf_counter()
        rows, skipped = self.rows(requests)
        timings["prepare_s"] = time.perf_counter() - t
        snapshot = self.ledger.snapshot()
        try:
            t = time.perf_counter()
            new, steps, history = self._train(rows)
            timings["train_s"] = time.perf_counter() - t
            for layer, w in new.items():
                self.ledger.replace(layer, w)
            t = time.perf_counter()
            reports = self._request_reports(requests, rows, steps)
            timings["report_s"] = time.perf_counter() - t
        except BaseException:
            self.ledger.rollback(snapshot)
            raise
        self._batches += 1
        self._n_edits += len(requests)
        return FTEditReport(method=self.name, batch=self._batches, n_requests=len(requests), requests=reports,
                            layers=[], timings=timings, steps=steps, loss_history=history,
                            negation_terms=len({r.request for r in rows if r.negative}),
                            negation_skipped=skipped)

    @torch.no_grad()
    def _request_reports(self, requests: list[EditRequest], rows: list[_Row], steps: int) -> list[FTRequestReport]:
        """Each request's bare-query numbers on the model as written (its own dtype)."""
        bare = [r for r in rows if r.bare]
        losses: list[float] = []
        for part in chunks(bare, self.hp.rows_per_pass):
            nll_rows = [_Row(r.request, r.ids, r.start, r.labels, False, True) for r in part]
            losses += self._row_losses({}, nll_rows).tolist()  # NLL for both kinds
        pos = {r.request: l for r, l in zip(bare, losses) if not r.negative}
        neg = {r.request: l for r, l in zip(bare, losses) if r.negative}
        return [FTRequestReport(id=req.id, loss=pos[i], target_prob=float(torch.exp(torch.tensor(-pos[i]))),
                                steps=steps, opposite_prob=float(torch.exp(torch.tensor(-neg[i]))) if i in neg else None)
                for i, req in enumerate(requests)]

    # --- the editor interface ------------------------------------------------------------------
    def prepare(self) -> None:
        """The context templates, sampled from the (still unedited) model."""
        self.templates()

    def finalize(self) -> dict:
        return {}

    def restore(self) -> None:
        """Put the original weights back and forget the edits (the templates are kept)."""
        self.ledger.restore()
        self._batches = self._n_edits = 0

    @property
    def deltas(self) -> dict[int, torch.Tensor]:
        """Accumulated updates per layer, in the stored weight's orientation (fp32)."""
        return self.ledger.deltas

    # --- state --------------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """Hyperparameters, templates and deltas (``include_stats``: FT has no statistics)."""
        directory = Path(directory)
        return write_editor_state(
            directory, self, STATE_VERSION, "deltas.safetensors", self.ledger.tensors(),
            batches=self._batches, n_edits=self._n_edits,
            templates=self._templates.model_dump(mode="json") if self._templates else None)

    def load_state(self, directory: str | Path) -> None:
        """Re-apply a saved state to this editor's (unedited) model."""
        directory = Path(directory)
        meta, deltas = read_editor_state(directory, self, STATE_VERSION, "deltas.safetensors", "deltas")
        if meta["hparams"]["layers"] != self.layers:
            raise StateError(f"{directory}: edit layers {meta['hparams']['layers']} differ from {self.layers}")
        self.restore()
        # The saved templates, not new ones: resampling on an edited model would differ.
        self._templates = ContextTemplates.model_validate(meta["templates"]) if meta.get("templates") else None
        self.ledger.load(deltas, key_of=int)
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]

    # --- the editor contract (editing/api.py) -------------------------------------------------
    def trained_forms(self) -> frozenset[TrainedForm]:
        """The bare statement; behind ``n_context`` sampled prefixes when there are any; the
        opposite-polarity query's unlikelihood rows with ``augment_negation``."""
        forms = {TrainedForm.POSITIVE}
        if self.hp.n_context:
            forms.add(TrainedForm.PREFIXED)
        if self.hp.augment_negation:
            forms.add(TrainedForm.NEGATED)
        return frozenset(forms)
