"""The LTE engine: one editor class holding the machinery every locate-then-edit method
shares. A method subclasses it and states only its difference (usually ``solve``).

An editor owns its state and is made of its parts: the context templates, a
:class:`~editprobe.editing.ledger.WeightLedger` (original weights and accumulated deltas,
keyed by edit layer), a :class:`~editprobe.editing.lte.stats_source.StatsSource` (C0 per layer
and the projectors made from it) and the preserved keys behind K_p K_pᵀ
(:class:`~editprobe.editing.lte.preserved.PreservedKeys`). It saves, loads and restores them
together (the files: editing/lte/state.py).
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from typing import ClassVar

import torch
from pydantic import BaseModel

from ...data.records import EditRequest
from ...models.adapters import get_adapter
from ..api import EditReport, LayerReport, RequestReport  # noqa: F401  (re-exported: their old home)
from ..api import Editor, RemoteCheck, TrainedForm
from .context import ContextTemplates, TemplateSpec, generate_templates
from ..settings.hparams import LTEHParams
from .keys import KeyReplay, compute_keys
from ..ledger import WeightLedger
from .negation_terms import negation_terms, with_opposite_template
from .objective import LossTerm
from .preserved import PreservedKeys
from ..prompts import RequestError, as_batch, as_request
from .solvers import NumericalError
from .state import STATE_VERSION, read_lte_meta, read_lte_tensors, read_preserved, write_lte_state
from .stats_source import StatsSource
from .forward_replay import TargetConstruction
from .target_cache import TargetCache
from .targets import Site, TargetOptimizer, TargetResult, TargetSettings


class SolveError(FloatingPointError):
    pass


class LTEEditor(TargetConstruction, Editor):
    """MEMIT-family editor: targets at the last edit layer, residual spread over the layers,
    a closed-form update per layer (``solve``), applied layer by layer."""

    name = "lte"
    hparams_cls = LTEHParams
    site_kind = "block"  # where the free vector of target optimization is added
    residual_kind = "block"  # which value at the critical layer the residual is measured on
    spread_power = 1.0  # R_i = (Z - H_cur) / (m - i) ** spread_power
    needs_covariance = True  # whether the solve uses λ·C0 (``c0_for`` gives None otherwise)
    uses_preserved_keys = True  # whether preserve_previous (K_p K_pᵀ) means anything to the method
    # Whether the keys the layer solves read are those of the model the batch leaves, so K_p
    # reuses them; False when a method changes a lower layer's write after the upper layers
    # read their keys (RECT's reference mode): K_p then costs one more key pass per batch.
    solve_keys_are_final = True
    # Edit a batch one request at a time, each request's targets and keys computed on the
    # model the previous ones edited (ROME); the whole batch at once otherwise.
    per_request = False
    # What ``editprobe tune`` reads (jobs/tune/space.py): whether the method edits exactly one
    # layer (its window width is then 1), and the hparams field that weighs its solve's
    # regulariser, searched on a log scale (None: nothing to search).
    single_layer: ClassVar[bool] = False
    solve_weight_field: ClassVar[str | None] = "mom2_update_weight"

    def __init__(self, model, tokenizer, hparams: LTEHParams, adapter=None, stats=None, corpus=None, model_id: str | None = None,
                 target_cache: TargetCache | None = None):
        self.model, self.tok = model, tokenizer
        self.adapter = adapter or get_adapter(model)
        if not isinstance(hparams, self.hparams_cls):
            hparams = self.hparams_cls.model_validate(hparams.model_dump() if isinstance(hparams, BaseModel) else hparams)
        hparams.check_model(self.adapter.n_layers(model))
        self.hp = hparams
        self.device = next(model.parameters()).device
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self._templates: ContextTemplates | None = None
        # the edit layers' weights: W = (original + accumulated deltas).to(model dtype)
        self.ledger: WeightLedger[int] = WeightLedger(partial(self.adapter.edit_weight, model))
        # C0 of the unedited model, hence the guard: no statistics once the ledger holds edits
        self.stats_source = StatsSource(model, tokenizer, self.adapter, hparams, self.model_id, self.layers,
                                        store=stats, corpus=corpus, unedited=self.ledger.is_empty)
        self.preserved_keys = PreservedKeys()  # K_p K_pᵀ per layer and the keys a saved state rebuilds it from
        self._batches = 0
        self._n_edits = 0
        # batches whose targets were computed before (same weights, requests, settings) are
        # read from it; None computes every batch (target_cache.py)
        self.target_cache = target_cache
        self._insert_keys: dict[int, torch.Tensor] = {}  # this batch's keys as the solves read them
        self._key_replay = KeyReplay()

    # --- shared pieces ------------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return list(self.hp.layers)

    @property
    def critical_layer(self) -> int:
        return self.hp.layers[-1]

    def template_spec(self) -> TemplateSpec:
        return TemplateSpec(groups=tuple(tuple(g) for g in self.hp.template_groups), flat=self.hp.template_flat)

    def templates(self) -> ContextTemplates:
        if self._templates is None:
            self._templates = generate_templates(self.model, self.tok, self.template_spec(), seed=self.hp.template_seed)
        return self._templates

    def target_settings(self) -> TargetSettings:
        site = Site(self.site_kind, self.hp.clamp_norm_factor, self.hp.v_weight_decay)
        return TargetSettings(
            layer=self.target_layer, sites=(site,), lr=self.hp.v_lr, steps=self.hp.v_num_grad_steps,
            kl_factor=self.hp.kl_factor, early_stop_loss=self.hp.early_stop_loss, kl_prompt=self.hp.kl_prompt,
            locate=self.hp.locate,
        )

    def loss_terms(self) -> list[LossTerm]:
        """Extra terms of the target objective from the settings (negation: defend). A method
        that builds its own optimizer passes these on."""
        if self.hp.negation == "defend":
            return negation_terms(self.hp.negation_unlikelihood, self.hp.negation_kl, hold=self.hp.early_stop_loss)
        return []

    def target_optimizer(self) -> TargetOptimizer:
        return TargetOptimizer(self.model, self.tok, self.adapter, self.target_settings(), self.loss_terms())

    def variant(self) -> str | None:
        """A short label for non-default negation and target settings ("defend", "last-token",
        "fe", "defend+fe", ...), None for the method as published."""
        fe = "fe" if self.hp.replay_targets == "per-batch" else "fe-precomputed"
        parts = [label for label, on in (("defend", self.hp.negation == "defend"),
                                         ("last-token", self.hp.locate == "last-token"),
                                         (fe, self.hp.targets == "forward-replay")) if on]
        return "+".join(parts) or None

    # --- what a method states -----------------------------------------------------------------
    def solve(self, layer: int, K: torch.Tensor, R: torch.Tensor) -> torch.Tensor:
        """The update ``[d, d_ff]`` for ``layer`` from keys ``K [d_ff, n]`` and residuals ``R [d, n]``."""
        raise NotImplementedError

    def postprocess(self, layer: int, delta: torch.Tensor) -> torch.Tensor:
        """A method's change to an update before it is written (RECT, AdaEdit)."""
        return delta

    def preserved(self, layer: int) -> torch.Tensor | None:
        """K_p K_pᵀ of all earlier batches for the solve, when preserve_previous is on."""
        if not self.hp.preserve_previous or layer not in self.preserved_keys:
            return None
        return self.preserved_keys[layer]

    def c0_for(self, layer: int, device) -> torch.Tensor | None:
        """C0 for a solve on ``device``, or None when the method runs without it."""
        return self.covariance(layer).to(device) if self.needs_covariance else None

    def cp_for(self, layer: int, device) -> torch.Tensor | None:
        """``preserved(layer)`` on ``device`` (None when off or empty)."""
        cp = self.preserved(layer)
        return None if cp is None else cp.to(device)

    # --- the batch ----------------------------------------------------------------------------
    def validate(self, requests: list[EditRequest]) -> None:
        """The batch as a method needs it (each request was checked by ``as_request``)."""
        if not requests:
            raise RequestError("empty batch of requests")

    def apply(self, requests: list[EditRequest]) -> EditReport:
        """Edit the model in place for one batch. On any error the model is left exactly as
        before the batch and the error names the request or layer."""
        requests = as_batch(requests)
        if self.hp.negation != "off":
            # raises for a template without a known opposite
            requests = [with_opposite_template(r) for r in requests]
        self.validate(requests)
        # K_p K_pᵀ and its key lists are replaced, never changed in place, so a reference
        # suffices: a clone would double d_ff² float64 per layer (1.6 GB at d_ff = 14336).
        weights, preserved = self.ledger.snapshot(), self.preserved_keys.copy()
        try:
            report = self._apply(requests)
        except BaseException:
            self.ledger.rollback(weights)
            self.preserved_keys = preserved
            raise
        self._batches += 1
        self._n_edits += len(requests)
        return report

    def _apply(self, requests: list[EditRequest]) -> EditReport:
        timings: dict[str, float] = {}
        t = time.perf_counter()
        self.templates()
        self.prepare()
        timings["prepare_s"] = time.perf_counter() - t
        timings["targets_s"] = timings["insert_s"] = 0.0
        self._insert_keys = {}
        req_reports: list[RequestReport] = []
        layer_reports: list[LayerReport] = []
        for group in ([r] for r in requests) if self.per_request else [requests]:
            t = time.perf_counter()
            targets = self.compute_targets(group)
            timings["targets_s"] += time.perf_counter() - t
            t = time.perf_counter()
            layer_reports += self.insert(group, targets)
            timings["insert_s"] += time.perf_counter() - t
            req_reports += [RequestReport(id=r.id, loss=l, target_prob=p, steps=s)
                            for r, l, p, s in zip(group, targets.loss, targets.target_prob, targets.steps)]
        t = time.perf_counter()
        self.after_batch(requests)
        timings["after_batch_s"] = time.perf_counter() - t
        return EditReport(method=self.name, batch=self._batches, n_requests=len(requests), requests=req_reports,
                          layers=layer_reports, timings=timings)

    def insert(self, requests: list[EditRequest], targets: TargetResult) -> list[LayerReport]:
        """Spread the residual over the layers and write each layer's update (docs/engine.md, Spreading over layers)."""
        reports = []
        self._key_replay = KeyReplay()  # these requests' key passes start where the last write was
        for i, layer in enumerate(self.layers):
            where = f"layer {layer}" + (f" (request {requests[0].id})" if self.per_request else "")
            try:
                delta, residual = self.layer_update(requests, targets, i, layer)
            except NumericalError as exc:
                raise SolveError(f"{self.name}: the solve for {where} failed: {exc}") from exc
            if not torch.isfinite(delta).all():
                raise SolveError(f"{self.name}: the update for {where} has NaN/inf")
            delta = self.postprocess(layer, delta)
            self.write(layer, delta)
            reports.append(LayerReport(layer=layer, residual_norm=float(residual.norm(dim=0).mean()),
                                       update_norm=float(delta.norm())))
        return reports

    def layer_update(self, requests: list[EditRequest], targets: TargetResult, i: int, layer: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The update ``[d, d_ff]`` for the i-th edit layer and the residuals ``[d, n]`` it was
        solved for: ``solve`` on ``layer_inputs`` (ROME states its own)."""
        keys, residual = self.layer_inputs(requests, targets, i, layer)
        return self.solve(layer, keys, residual), residual

    def layer_inputs(self, requests: list[EditRequest], targets: TargetResult, i: int, layer: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys ``[d_ff, n]`` at ``layer`` and residuals ``[d, n]`` for the i-th edit layer, on
        the current model: R_i = (Z − H_cur) / (m − i)^spread_power (docs/engine.md, Spreading
        over layers); with forward-replay targets R_i = z_i − h_i at layer i itself, in full.
        NAMET's official residual differs (a mean over prompts)."""
        replayed = self.hp.targets == "forward-replay"
        z = (targets.by_layer[layer] if replayed else targets.z[self.site_kind]).T.to(self.device)  # [d, n]
        keys, h_cur = compute_keys(
            self.model, self.tok, self.adapter, requests, self.templates(), [layer],
            hcur_layer=layer if replayed else self.critical_layer, hcur_kind=self.residual_kind, locate=self.hp.locate,
            replay=self._key_replay,
        )
        self._insert_keys[layer] = keys[layer]
        divisor = 1 if replayed else (len(self.layers) - i) ** self.spread_power
        return keys[layer], (z - h_cur) / divisor

    def after_batch(self, requests: list[EditRequest]) -> None:
        """Add this batch's keys, recomputed on the edited model (the choice of the official
        AlphaEdit code, jianghoucheng/AlphaEdit), to K_p K_pᵀ (float64, on the CPU); the keys
        are kept too, for saved states. Sums and key lists are new objects, never in-place
        updates: rollback keeps references. Nothing for a method that never uses them (ROME)."""
        if not self.uses_preserved_keys:
            return
        keys = self._insert_keys
        if self.per_request or not self.solve_keys_are_final or set(keys) != set(self.layers):
            keys, _ = compute_keys(self.model, self.tok, self.adapter, requests, self.templates(), self.layers,
                                   locate=self.hp.locate)
        # Else the keys the solves used are already those of the edited model: a layer's key
        # (its MLP's down-projection input) depends only on the layers below it, and the
        # insert read it after every lower layer's (final) write; writes go to down-projections only.
        for layer, k in keys.items():
            self.preserved_keys.add(layer, k)

    def finalize(self) -> dict:
        """Work a method does once after the last batch (PRUNE's restraint); a no-op here."""
        return {}

    def prepare(self) -> None:
        """Load what the solves need before the first batch (covariance, projectors)."""
        if self.needs_covariance:
            for layer in self.layers:
                self.covariance(layer)

    # --- the state's parts, as methods reach them --------------------------------------------
    def master_weight(self, layer: int) -> torch.Tensor:
        """The fp32 master of ``layer``'s edited weight, in the stored orientation: original +
        accumulated deltas once the layer was edited, else the model's weight in fp32. Methods
        that look at the current weight read this, so a bf16 model's rounding does not enter."""
        return self.ledger.master(layer)

    def write(self, layer: int, delta_out_in: torch.Tensor) -> None:
        """Add the update ``[d, d_ff]`` to ``layer``'s accumulated delta and write the weight."""
        weight = self.adapter.edit_weight(self.model, layer)
        self.ledger.add(layer, self.adapter.to_stored(delta_out_in.float(), weight))

    @property
    def deltas(self) -> dict[int, torch.Tensor]:
        """Accumulated updates per layer, in the stored weight's orientation (fp32)."""
        return self.ledger.deltas

    def restore(self) -> None:
        """Put the original weights back and forget the edits (templates and C0 are kept)."""
        self.ledger.restore()
        self.preserved_keys = PreservedKeys()
        self._batches = self._n_edits = 0

    # What the statistics source answers (editing/lte/stats_source.py), asked of the editor.
    def covariance(self, layer: int) -> torch.Tensor:
        """C0 for ``layer`` (mean uncentred second moment of the edited weight's input),
        computed for all edit layers in one pass on first use, on the unedited model."""
        return self.stats_source.covariance(layer)

    def c0_corpus(self):
        return self.stats_source.c0_corpus()

    def c0_info(self) -> dict:
        """Which corpus C0 came from, how its documents were picked and how many they read."""
        return self.stats_source.c0_info()

    def stats_store(self):
        return self.stats_source.stats_store()

    def stats_request(self, layers: list[int]) -> dict:
        """Everything that identifies this editor's statistics (the store's cache key)."""
        return self.stats_source.stats_request(layers)

    # --- save / load ---------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """Templates, hyperparameters, deltas, the keys behind K_p K_pᵀ (or, once they would
        outgrow it, the matrix) and (optionally) C0 and projectors (files: editing/lte/state.py)."""
        directory = Path(directory)
        meta = {"version": STATE_VERSION, "method": self.name, "model_id": self.model_id,
                "model_type": self.model.config.model_type, "hparams": self.hp.model_dump(mode="json"),
                "batches": self._batches, "n_edits": self._n_edits,
                "templates": self._templates.model_dump(mode="json") if self._templates else None,
                "extra": self._extra_meta(), "preserved": self.preserved_keys.meta(),
                "c0_corpus": self.c0_corpus().identity if self.needs_covariance else None}
        stats = {**self._extra_state(), **self.stats_source.tensors()} if include_stats else {}
        return write_lte_state(directory, meta, self.ledger.tensors(), self.preserved_keys, stats)

    def load_state(self, directory: str | Path) -> None:
        """Re-apply a saved state to this editor's (unedited) model."""
        directory = Path(directory)
        meta = read_lte_meta(directory, self.name, self.model.config.model_type, self.layers, self.hp)
        if self.needs_covariance:
            self.stats_source.check_saved_corpus(directory, meta)
        preserved = read_preserved(directory, meta)
        self.restore()
        self._templates = ContextTemplates.model_validate(meta["templates"]) if meta.get("templates") else None
        deltas, stats = read_lte_tensors(directory)
        self.ledger.load(deltas, key_of=int)
        self.preserved_keys = preserved
        self.stats_source.load(stats)
        self._load_extra_state(stats)
        self._batches, self._n_edits = meta["batches"], meta["n_edits"]
        self._load_extra_meta(meta.get("extra") or {})

    def _extra_state(self) -> dict[str, torch.Tensor]:
        """Method-specific tensors to save with the statistics (e.g. AlphaEdit's projectors)."""
        return {}

    def _load_extra_state(self, tensors: dict[str, torch.Tensor]) -> None:
        pass

    def _extra_meta(self) -> dict:
        """Method-specific small JSON state, saved even without stats (e.g. PRUNE's
        "already finalized" mark, which must survive a reload to keep finalize idempotent)."""
        return {}

    def _load_extra_meta(self, meta: dict) -> None:
        pass

    # --- the editor contract (editing/api.py) -------------------------------------------------
    def trained_forms(self) -> frozenset[TrainedForm]:
        """The bare prompt; the context templates' prefixes unless ``template_groups`` is empty;
        the negated prompt with ``negation: defend`` (its unlikelihood and KL terms)."""
        forms = {TrainedForm.POSITIVE}
        if self.template_spec().groups:
            forms.add(TrainedForm.PREFIXED)
        if self.hp.negation == "defend":
            forms.add(TrainedForm.NEGATED)
        return frozenset(forms)

    @classmethod
    def requirements(cls, hparams, model, tokenizer, model_id: str) -> list[RemoteCheck]:
        """A remote C0 corpus whose statistics are not cached yet, asked of the settings."""
        if not cls.covariance_needed(hparams):
            return []
        return StatsSource(model, tokenizer, get_adapter(model), hparams, model_id, hparams.layers).remote_requirements()

    def remote_requirements(self) -> list[RemoteCheck]:
        return self.stats_source.remote_requirements() if self.needs_covariance else []

    def attach_target_cache(self, cache: TargetCache) -> bool:
        """Batches whose targets the cache holds are read from it (``compute_targets``)."""
        self.target_cache = cache
        return True
