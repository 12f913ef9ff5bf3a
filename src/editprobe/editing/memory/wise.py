"""``wise``: lifelong editing in a side memory with a router (docs/wise.md).

WISE (Wang et al., "WISE: Rethinking the Knowledge Memory for Lifelong Model Editing of Large
Language Models", NeurIPS 2024), written for this package from the paper; EasyEdit's
``easyeditor/models/wise`` is the reference read for the settings and the details. The edit
layer's MLP output projection (the value, or main, memory) is never written: a copy of it,
the side memory, learns the edits (wise_train.py); a forward hook routes each token to a
side memory when the difference it makes there exceeds its threshold (wise_memory.py).
Knowledge sharding: every ``save_freq`` edits a shard closes and the next starts from the main
memory with a fresh random gradient mask of density ``mask_ratio``; every ``merge_freq``
edits the shards since the last merge are TIES-merged into one memory (``retrieve``: kept
beside the earlier merges, the router picks the most active; otherwise folded into a
single merged memory, EasyEdit's WISE-Merge).

The routing margins need prompts unrelated to the edits: ``irrelevant`` names them (the
built-in counterfact-train by default), checked disjoint, by subject and by prompt, from the
records a run evaluates before any work (``check_records``) and from every batch.
"""

from __future__ import annotations

import random
import time
import zlib
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from ...data.records import EditRequest
from ...errors import UserError
from ...models.adapters import get_adapter
from ...models.hooks import frozen_parameters
from ...models.tokens import TokenizationError, continuation_ids, encode_open, join_target
from ..api import EditReport, Editor, RequestReport, TrainedForm
from ..lte.context import ContextTemplates, TemplateSpec, generate_templates
from ..lte.state import StateError, read_editor_state, write_editor_state
from ..plugins import register_method
from ..prompts import RequestError, as_batch
from .wise_memory import NO_EDIT, SideMemory, WiseRouter, ties_merge
from .wise_train import Row, SideTraining, request_acts, train_side

STATE_VERSION = 1


class WISEDataError(UserError, ValueError):
    """The irrelevant prompts cannot be read, or overlap the evaluated records."""


class WISESettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = "wise"
    source: str = Field("", description="where these values come from (paper, repo:path, or our sweep)")
    layer: int | None = None  # the edited MLP's layer; None: EasyEdit's relative depth (29 of 32)
    edit_lr: float = Field(0.9, gt=0)  # SGD
    n_iter: int = Field(30, ge=1)
    weight_decay: float = Field(1e-5, ge=0)
    norm_constraint: float | None = Field(1.0, gt=0)  # per entry, around the main memory; None: none
    early_stop_loss: float | None = Field(0.02, ge=0)
    mask_ratio: float = Field(0.2, gt=0, le=1)  # ρ: the density of a shard's gradient mask
    act_margin: tuple[float, float, float] = (2.0, 20.0, 10.0)  # alpha, beta, gamma (EasyEdit's order)
    act_ratio: float = Field(0.5, gt=0)  # a memory's threshold: act_ratio × its edits' least mean Δ
    save_freq: int = Field(500, ge=1)  # edits per shard
    merge_freq: int = Field(1000, ge=1)  # edits between merges: a multiple of save_freq
    merge_alg: str = "ties"
    densities: float = Field(0.53, gt=0, le=1)  # TIES trim: the share of each task vector kept
    weights: float = Field(1.0, gt=0)  # TIES: the shards' total weight
    retrieve: bool = True
    context_templates: tuple[tuple[int, int], ...] = ((5, 5), (10, 5))  # (length, count) prefix groups
    template_seed: int = 0
    seed: int = 0  # shard masks and irrelevant prompts
    irrelevant: str = "counterfact-train"  # a dataset (built-in name or path) disjoint from the evaluated records
    irrelevant_range: tuple[int, int] | None = None  # [first, last) of its records; None: all
    irrelevant_per_edit: int = Field(1, ge=1)
    # the paper's protocol: each request of a batch trains the shard on its own, one after the
    # other (T sequential single edits); False: one joint objective over the batch, whose mean
    # loss gives each edit 1/batch of the step (on SmolLM2 at batches of 20: mean target prob 0.09)
    sequential: bool = True

    @model_validator(mode="after")
    def _consistent(self):
        if self.merge_freq % self.save_freq:
            raise ValueError(f"merge_freq {self.merge_freq} must be a multiple of save_freq {self.save_freq}")
        if self.merge_alg != "ties":
            raise ValueError(f"merge_alg {self.merge_alg!r}: only 'ties' is implemented")
        return self

    def check_model(self, n_layers: int) -> None:
        if self.layer is not None and not 0 <= self.layer < n_layers:
            raise ValueError(f"wise: layer {self.layer} is outside the model's {n_layers} layers")

    def edit_layer(self, n_layers: int) -> int:
        return self.layer if self.layer is not None else (n_layers * 29) // 32


def _key(text: str) -> str:
    return " ".join(text.lower().split())


def irrelevant_statements(hp: WISESettings) -> list[tuple[str, str, str, str]]:
    """(id, subject, prompt, statement) of every usable irrelevant record; the statement is its
    prompt and true object."""
    from ...data import load_records

    try:
        records = load_records(hp.irrelevant, on_bad_record="skip").records
    except (OSError, UserError) as exc:
        raise WISEDataError(f"wise: irrelevant prompts {hp.irrelevant!r}: {exc}") from None
    if hp.irrelevant_range is not None:
        records = records[slice(*hp.irrelevant_range)]
    pool = [(r.id, r.subject, r.query, join_target(r.query, r.target_true)) for r in records if r.target_true]
    if not pool:
        raise WISEDataError(f"wise: irrelevant prompts {hp.irrelevant!r}: no record with a true object")
    return pool


def check_disjoint(pool: list[tuple[str, str, str, str]], items, source: str) -> None:
    """One line if an irrelevant record shares a subject or a prompt with ``items`` (records or
    requests). Ids are not compared: they number each file anew (counterfact-train's restart)."""
    subjects = {_key(i.subject) for i in items}
    prompts = {_key(i.query) for i in items}
    clash = [(rid, subject) for rid, subject, prompt, _ in pool if _key(subject) in subjects or _key(prompt) in prompts]
    if clash:
        rid, subject = clash[0]
        raise WISEDataError(f"wise: {len(clash)} irrelevant records of {source!r} share a subject or prompt with the "
                            f"edited records (e.g. record {rid}, {subject!r}); set irrelevant_range or irrelevant "
                            "to records disjoint from them")


@register_method
class WISEEditor(Editor):
    name = "wise"
    hparams_cls = WISESettings
    edit_in_weights = False  # the edit is the side memories and the router's hook
    trains_on = frozenset({TrainedForm.POSITIVE})
    seed_fields = ("template_seed", "seed")

    def __init__(self, model: nn.Module, tokenizer, hparams: WISESettings, adapter=None, model_id: str | None = None):
        self.model, self.tok = model, tokenizer
        self.adapter = adapter or get_adapter(model)
        n_layers = self.adapter.n_layers(model)
        hparams.check_model(n_layers)
        self.hp = hparams.model_copy(update={"layer": hparams.edit_layer(n_layers)})
        self.model_id = model_id or getattr(model.config, "_name_or_path", "") or model.config.model_type
        self.module = self.adapter.mlp_out_module(model, self.hp.layer)
        stored = self.adapter.edit_weight(model, self.hp.layer)
        self.main = self.adapter.to_out_in(stored).detach().float().clone()  # fp32 whatever the dtype
        bias = getattr(self.module, "bias", None)
        self.bias = bias.detach().float().clone() if bias is not None else None
        self.router = WiseRouter(self.module, self.main, self.bias, self.hp.act_ratio)
        self._templates: ContextTemplates | None = None
        self._pool: list[tuple[str, str, str, str]] | None = None
        self._reset()

    def _reset(self) -> None:
        self.memories: list[SideMemory] = []  # closed shards and merges, oldest first
        self.current: SideMemory | None = None  # the shard being trained
        self.mask: torch.Tensor | None = None
        self.shards = self.batches = self.n_edits = self.merges = 0

    # --- what training reads -------------------------------------------------------------------
    def templates(self) -> ContextTemplates:
        if self._templates is None:
            groups = tuple(g for g in self.hp.context_templates if g[1] > 0)
            self._templates = (ContextTemplates(groups=(("{}",),)) if not groups else
                               generate_templates(self.model, self.tok, TemplateSpec(groups=groups),
                                                  seed=self.hp.template_seed))
        return self._templates

    def pool(self) -> list[tuple[str, str, str, str]]:
        if self._pool is None:
            self._pool = irrelevant_statements(self.hp)
        return self._pool

    @classmethod
    def check_records(cls, hparams: WISESettings, records) -> None:
        """Before a run's work: the irrelevant prompts share no subject or prompt with its records."""
        check_disjoint(irrelevant_statements(hparams), records, hparams.irrelevant)

    def rows(self, requests: list[EditRequest], first: int) -> list[Row]:
        """Each request's statements (bare and behind every prefix), then its irrelevant prompts,
        drawn with the settings' seed and ``first``, the number of edits made before these: a
        sequential batch of k draws what k batches of one would."""
        rng = random.Random(zlib.crc32(f"wise:{self.hp.seed}:{first}".encode()))
        pool = self.pool()
        rows: list[Row] = []
        for r, req in enumerate(requests):
            for t, template in enumerate(self.templates().all):
                text = template.format(req.query)
                try:
                    q, labels = encode_open(self.tok, text), continuation_ids(self.tok, text, req.target)
                except TokenizationError as exc:
                    raise RequestError(f"request {req.id}: {exc}") from None
                rows.append(Row(r, q + labels[:-1], len(q) - 1, tuple(labels), bare=t == 0))
            for _ in range(self.hp.irrelevant_per_edit):
                rows.append(Row(r, encode_open(self.tok, rng.choice(pool)[3])))
        return rows

    def _shard_mask(self) -> torch.Tensor:
        gen = torch.Generator().manual_seed(zlib.crc32(f"wise-mask:{self.hp.seed}:{self.shards}".encode()))
        return (torch.rand(self.main.shape, generator=gen) < self.hp.mask_ratio).float().to(self.main.device)

    # --- editing -------------------------------------------------------------------------------
    def apply(self, requests: list[EditRequest]) -> EditReport:
        """Train the current shard on one batch (request by request when ``sequential``); close
        and merge shards when due. A batch that fails leaves every memory as it was."""
        requests = as_batch(requests)
        check_disjoint(self.pool(), requests, self.hp.irrelevant)
        groups = [[req] for req in requests] if self.hp.sequential else [requests]
        timings: dict[str, float] = {}
        t = time.perf_counter()
        rows = [self.rows(group, self.n_edits + i * len(group)) for i, group in enumerate(groups)]
        timings["prepare_s"] = time.perf_counter() - t
        before = (list(self.memories), self.current, self.mask, self.shards, self.merges)
        try:
            t = time.perf_counter()
            self.router.remove()  # training sees the side weight alone, not the router
            steps = [self._train(group, group_rows) for group, group_rows in zip(groups, rows)]
            timings["train_s"] = time.perf_counter() - t
            self.router.set_memories(self._consulted())
            reports = self._request_reports(requests, [n for group, n in zip(groups, steps) for _ in group])
        except BaseException:
            self.memories, self.current, self.mask, self.shards, self.merges = before
            self.router.remove()
            self.router.set_memories(self._consulted())
            raise
        self.batches += 1
        self.n_edits += len(requests)
        return EditReport(method=self.name, batch=self.batches, n_requests=len(requests), requests=reports,
                          layers=[], timings=timings)

    def _train(self, requests: list[EditRequest], rows: list[Row]) -> int:
        """One training of the current shard (opened if none) on ``requests``; returns its steps."""
        if self.current is None:
            self.current, self.mask = SideMemory(self.main.clone()), self._shard_mask()
            self.shards += 1
        training = SideTraining(self.model, self.tok, self.module, self.main, self.bias, rows)
        with frozen_parameters(self.model):
            weight, steps, _history = train_side(training, self.current.weight, self.mask, self.hp, len(requests))
            acts = request_acts(training, weight, len(requests))
        if not torch.isfinite(weight).all():
            raise FloatingPointError("wise: a side-memory weight has NaN/inf")
        self.current = SideMemory(weight, min(self.current.min_act, *acts), self.current.n_edits + len(requests))
        self._close_and_merge()
        return steps

    def _close_and_merge(self) -> None:
        """Close the shard once it holds ``save_freq`` edits; merge when ``merge_freq`` edits
        have gone into shards since the last merge."""
        if self.current is None or self.current.n_edits < self.hp.save_freq:
            return
        self.memories.append(self.current)
        self.current, self.mask = None, None
        pending = [m for m in self.memories if not m.merged]
        if sum(m.n_edits for m in pending) < self.hp.merge_freq:
            return
        n = len(pending)
        if self.hp.retrieve or not any(m.merged for m in self.memories):
            shards, weights, kept = pending, [self.hp.weights / n] * n, [m for m in self.memories if m.merged]
        else:  # WISE-Merge: the new shards fold into the one merged memory (EasyEdit: 0.4 / 0.6)
            old = next(m for m in self.memories if m.merged)
            shards, weights, kept = pending + [old], [0.4 / n] * n + [0.6], []
        merged = ties_merge(self.main, [m.weight for m in shards], weights, self.hp.densities)
        self.memories = kept + [SideMemory(merged, min(m.min_act for m in shards),
                                           sum(m.n_edits for m in shards), merged=True)]
        self.merges += 1

    def _consulted(self) -> list[SideMemory]:
        return self.memories + ([self.current] if self.current is not None else [])

    @torch.no_grad()
    def _request_reports(self, requests: list[EditRequest], steps: list[int]) -> list[RequestReport]:
        """Each request's target probability after its bare query, through the router."""
        device = self.main.device
        out = []
        for req, n_steps in zip(requests, steps):
            q, t = encode_open(self.tok, req.query), continuation_ids(self.tok, req.query, req.target)
            logits = self.model(input_ids=torch.tensor([q + t[:-1]], device=device), use_cache=False).logits
            logp = logits[0, len(q) - 1:].float().log_softmax(-1)[torch.arange(len(t)), torch.tensor(t)]
            nll = float(-logp.mean())
            out.append(RequestReport(id=req.id, loss=nll, target_prob=float(torch.exp(torch.tensor(-nll))), steps=n_steps))
        return out

    # --- the editor contract -------------------------------------------------------------------
    def prepare(self) -> None:
        """The context prefixes (sampled from the unedited model) and the irrelevant prompts."""
        self.templates()
        self.pool()

    def restore(self) -> None:
        """Remove the router; forget every memory (the prefixes and prompts are kept)."""
        self.router.remove()
        self._reset()

    def trained_forms(self) -> frozenset[TrainedForm]:
        return frozenset({TrainedForm.POSITIVE, TrainedForm.PREFIXED}) if len(self.templates().all) > 1 else self.trains_on

    def variant(self) -> str | None:
        return None if self.hp.retrieve else "merge"

    def memory_summary(self) -> list[dict]:
        """Per consulted memory: edits, whether merged, its threshold (docs, tests)."""
        return [{"n_edits": m.n_edits, "merged": m.merged, "threshold": m.threshold(self.hp.act_ratio)}
                for m in self._consulted()]

    # --- state ---------------------------------------------------------------------------------
    def save_state(self, directory: str | Path, include_stats: bool = True) -> Path:
        """Memories, the current shard and its mask, counters and prefixes (no statistics to leave out)."""
        directory = Path(directory)
        tensors = {f"memory.{i}": m.weight.contiguous() for i, m in enumerate(self.memories)}
        if self.current is not None:
            tensors["current"], tensors["mask"] = self.current.weight.contiguous(), self.mask.contiguous()

        def meta(m: SideMemory) -> dict:
            return {"min_act": None if m.min_act == NO_EDIT else m.min_act, "n_edits": m.n_edits, "merged": m.merged}

        return write_editor_state(
            directory, self, STATE_VERSION, "memories.safetensors", {k: v.cpu() for k, v in tensors.items()},
            memories=[meta(m) for m in self.memories], current=meta(self.current) if self.current is not None else None,
            shards=self.shards, batches=self.batches, n_edits=self.n_edits, merges=self.merges,
            templates=self._templates.model_dump(mode="json") if self._templates else None)

    def load_state(self, directory: str | Path) -> None:
        directory = Path(directory)
        meta, tensors = read_editor_state(directory, self, STATE_VERSION, "memories.safetensors", "memories",
                                          device=str(self.main.device))
        if meta["hparams"]["layer"] != self.hp.layer:
            raise StateError(f"{directory}: edit layer {meta['hparams']['layer']} differs from {self.hp.layer}")

        def memory(weight: torch.Tensor, m: dict) -> SideMemory:
            return SideMemory(weight, NO_EDIT if m["min_act"] is None else m["min_act"], m["n_edits"], m["merged"])

        self.restore()
        self._templates = ContextTemplates.model_validate(meta["templates"]) if meta.get("templates") else None
        self.memories = [memory(tensors[f"memory.{i}"], m) for i, m in enumerate(meta["memories"])]
        if meta["current"] is not None:
            self.current, self.mask = memory(tensors["current"], meta["current"]), tensors["mask"]
        self.shards, self.batches, self.n_edits, self.merges = (meta["shards"], meta["batches"], meta["n_edits"],
                                                                meta["merges"])
        self.router.set_memories(self._consulted())
