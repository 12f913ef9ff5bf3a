"""Target optimization, batched across all requests of a batch (docs/engine.md, Target
search; the objective: docs/methods/memit.md).

One forward and backward per step serves every request's rewriting prompts and KL prompt
together. Each request has its own free vector(s), clamp and early stop: the summed loss
gives every request exactly the gradient it would get alone, Adam is per-request (so a
finished request's vector stays frozen, momentum included), and finished requests leave
the batch. Layers below the start layer run once; logits are computed only at target and
KL positions.

A method changes the objective by overriding ``losses`` (typed ``LossTerms``) or, without
subclassing, by passing ``LossTerm`` objects (objective.py) whose values are added to
each request's loss.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from ...data.records import EditRequest
from ...models.adapters import ModelAdapter
from ...models.hooks import capture, edit_output, frozen_parameters
from ...models.resume_forward import block_output_arity, logits_at, resume_from
from .layout import GROUP_OVERHEAD_TOKENS, StepBatch, full_layout, prefix_cached_layout
from .objective import LossTerm, LossTerms, StepContext, local_index, per_request_mean, per_request_sums
from ..prompts import RowBatch, batch_rows, rewrite_rows


class OptimizationError(FloatingPointError):
    pass


@dataclass(frozen=True)
class Site:
    """Where a free vector is added: ``kind`` is 'block' (the residual stream after the
    block), 'mlp' (the MLP's output) or 'attn_out' (the attention output projection)."""

    kind: str = "block"
    clamp_norm_factor: float = 0.75
    weight_decay: float = 0.5
    # The value whose norm the clamp is relative to: None = this site's own anchor; 'block'
    # = the block output at the same layer (FE, jugechengzi/FE, clamps PMET's/AdaEdit's δ_mlp that way).
    clamp_to: str | None = None


@dataclass
class TargetSettings:
    layer: int
    sites: tuple[Site, ...] = (Site(),)
    lr: float = 0.5
    steps: int = 20
    kl_factor: float = 0.0625
    nll_factor: float = 1.0
    early_stop_loss: float = 5e-2
    kl_prompt: str | None = "{} is a"
    padding_side: str = "right"
    prefix_cache: bool = True  # run tokens before the subject once (see layout.py)
    # a forward's fixed cost in padded tokens: rows split into groups of similar suffix length
    # when that saves more (layout.suffix_groups); 0 = one group per length, large = one group
    group_overhead: int = GROUP_OVERHEAD_TOKENS
    locate: str = "subject"  # the edited token of every row (prompts.edit_index)


@dataclass
class TargetResult:
    """Per request: the optimized value(s) z = anchor + delta for each site, and how it went."""

    z: dict[str, torch.Tensor]  # site kind -> [n, d]
    anchor: dict[str, torch.Tensor]  # site kind -> [n, d] (value before optimization)
    loss: list[float]
    nll: list[float]
    target_prob: list[float]  # geometric-mean probability of the target tokens
    steps: list[int]
    seconds: float
    forward_tokens: int = 0
    history: list[float] = field(default_factory=list)  # summed loss per step
    terms: dict[str, list[float]] = field(default_factory=dict)  # each loss term's value per request (last step)
    # forward-replay targets per edit layer, [n, d] (the engine fills it after the
    # optimization; never cached: forward_replay.py)
    by_layer: dict[int, torch.Tensor] = field(default_factory=dict)


class _Adam:
    """Adam over rows of a [n, d] parameter with per-row step counts (torch's update rule)."""

    def __init__(self, shape, lr: float, device, betas=(0.9, 0.999), eps=1e-8):
        self.m = torch.zeros(shape, device=device)
        self.v = torch.zeros(shape, device=device)
        self.t = torch.zeros(shape[0], device=device)
        self.lr, self.b1, self.b2, self.eps = lr, betas[0], betas[1], eps

    @torch.no_grad()
    def step(self, param: torch.Tensor, grad: torch.Tensor, rows: torch.Tensor) -> None:
        g = grad[rows]
        self.t[rows] += 1
        t = self.t[rows][:, None]
        self.m[rows] = self.b1 * self.m[rows] + (1 - self.b1) * g
        self.v[rows] = self.b2 * self.v[rows] + (1 - self.b2) * g * g
        bc1 = 1 - self.b1**t
        bc2 = 1 - self.b2**t
        denom = (self.v[rows].sqrt() / bc2.sqrt()) + self.eps
        param[rows] -= (self.lr / bc1) * self.m[rows] / denom


@dataclass
class _Setup:
    """What ``run`` computes once before the steps."""

    ctx: StepContext
    start: int  # the block whose output the steps resume from (-1: from the embeddings)
    arity: int  # how many outputs a block returns (resume_from's stand-ins copy it)
    h_start: torch.Tensor | None  # that block's output on every row, without δ
    edit_pos: torch.Tensor  # per layout row: the batch position of its edited token
    req_of_row: torch.Tensor
    clamp_norm: dict[str, torch.Tensor]
    decay_div: dict[str, torch.Tensor]


class TargetOptimizer:
    """Computes z for a batch of requests. Subclasses change the objective (``losses``);
    ``loss_terms`` add terms to it without subclassing."""

    def __init__(self, model, tok, adapter: ModelAdapter, settings: TargetSettings,
                 loss_terms: Sequence[LossTerm] = ()):
        self.model, self.tok, self.adapter, self.s = model, tok, adapter, settings
        self.device = next(model.parameters()).device
        self.loss_terms: list[LossTerm] = list(loss_terms)

    # --- the pieces a method may override ---------------------------------------------------
    def build_rows(self, requests: list[EditRequest], templates: list[str]) -> RowBatch:
        rows = rewrite_rows(self.tok, requests, templates, self.s.kl_prompt, self.s.locate)
        for term in self.loss_terms:  # rows a term needs every step (after the target's own)
            extra = getattr(term, "rows", None)
            if extra is not None:
                rows += extra(self.tok, requests, templates, self.s.locate)
        return batch_rows(self.tok, rows, self.s.padding_side)

    def losses(self, rb: StepBatch, hidden: torch.Tensor, active: torch.Tensor, ctx: StepContext) -> LossTerms:
        """Per-active-request NLL of the target (rewriting rows), KL at the KL rows and top-1,
        from the final hidden states of ``rb``'s rows. Rows of other kinds are ignored."""
        n = len(active)
        local = local_index(active)
        kl = torch.zeros(n, device=self.device)
        tgt_rows, tgt_pos, tgt_lab, kl_rows, kl_pos = [], [], [], [], []
        for i, row in enumerate(rb.rows):
            if row.kind == "rewrite":
                for p, y in zip(row.target_positions, row.target_labels):
                    tgt_rows.append(i)
                    tgt_pos.append(rb.batch.position(i, p))
                    tgt_lab.append(y)
            elif row.kind == "kl":
                kl_rows.append(i)
                kl_pos.append(rb.batch.position(i, row.subject_index))
        logp = torch.log_softmax(logits_at(self.model, hidden[tgt_rows, tgt_pos]), -1)
        token_lp = logp[torch.arange(len(tgt_lab)), torch.tensor(tgt_lab, device=self.device)]
        # per row: mean log-prob over its target tokens; per request: mean over its rows
        row_of_tok = torch.tensor(tgt_rows, device=self.device)
        n_rows = len(rb.rows)
        row_sum, row_len = per_request_sums(token_lp, row_of_tok, n_rows)
        req_local = torch.tensor([local[r.request] for r in rb.rows], device=self.device)
        is_rw = torch.tensor([r.kind == "rewrite" for r in rb.rows], device=self.device)
        per_row = torch.where(is_rw, row_sum / row_len.clamp(min=1), torch.zeros_like(row_sum))
        nll = per_request_mean(-per_row, req_local, n, counts=is_rw.float())
        # per request: every target token of every rewriting row is the argmax (PMET's test)
        with torch.no_grad():
            miss = (logp.argmax(-1) != torch.tensor(tgt_lab, device=self.device)).float()
            row_miss = torch.zeros(n_rows, device=self.device).index_add(0, row_of_tok, miss)
            top1 = torch.zeros(n, device=self.device).index_add(0, req_local, row_miss) == 0
        if kl_rows and self.s.kl_factor:
            kl_logp = torch.log_softmax(logits_at(self.model, hidden[kl_rows, kl_pos]), -1)
            p0 = ctx.kl_p0[[rb.rows[i].request for i in kl_rows]]
            kl_each = (kl_logp.exp() * (kl_logp - p0)).sum(-1)  # KL(P_delta || P_0)
            kl = kl.index_add(0, req_local[kl_rows], kl_each)
        return LossTerms(nll=nll, kl=kl, top1=top1)

    def objective(self, rb: StepBatch, hidden: torch.Tensor, active: torch.Tensor, ctx: StepContext) -> LossTerms:
        """``losses`` plus every loss term (in order), each recorded under its name."""
        terms = self.losses(rb, hidden, active, ctx)
        for term in self.loss_terms:
            value = term(rb, hidden, active, ctx)
            terms.add(term.name, value, term.factor)
            hold = getattr(term, "hold", None)
            mask = hold(value.detach()) if hold is not None else None
            if mask is not None:
                terms.hold_where(mask)
        return terms

    def norms(self, site: Site, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """Per request: the norm a site's δ is clamped relative to, and the divisor of its
        weight decay w·‖δ‖/divisor (docs/methods/memit.md: ‖h0‖ and ‖h0‖²). Methods may change both."""
        own = ctx.anchor[site.kind].norm(dim=-1)
        ref = ctx.reference[site.clamp_to].norm(dim=-1) if site.clamp_to else own
        return ref, own.pow(2)

    def prepare(self, layout: StepBatch, hidden0: torch.Tensor, ctx: StepContext) -> None:
        """Hook for objectives that need extra reference values (e.g. a teacher pass)."""

    # --- the loop ---------------------------------------------------------------------------
    def run(self, requests: list[EditRequest], templates: list[str]) -> TargetResult:
        with frozen_parameters(self.model):
            if self.device.type != "cpu":
                return self._run(requests, templates)
            # At these shapes (a few query tokens, short caches) the math attention kernel is ~4%
            # faster per step on CPU than the flash kernel (measured; the same values to 1e-6).
            with sdpa_kernel(SDPBackend.MATH):
                return self._run(requests, templates)

    def _run(self, requests: list[EditRequest], templates: list[str]) -> TargetResult:
        t0 = time.perf_counter()
        s, dev, n = self.s, self.device, len(requests)
        setup = self._setup(requests, templates)
        layout = setup.ctx.layout
        d = self.adapter.d_model(self.model)
        deltas = {site.kind: torch.zeros(n, d, device=dev) for site in s.sites}
        adams = {site.kind: _Adam((n, d), s.lr, dev) for site in s.sites}
        out = TargetResult(z={}, anchor=setup.ctx.anchor, loss=[float("nan")] * n, nll=[float("nan")] * n,
                           target_prob=[], steps=[0] * n, seconds=0.0)
        active = torch.arange(n, device=dev)
        rb, keep = layout, list(range(len(layout.rows)))  # rows still optimized (indices into layout)
        for step in range(s.steps):
            live_requests = set(active.tolist())
            still = [i for i, g in enumerate(keep) if layout.rows[g].request in live_requests]
            if len(still) < len(keep):
                rb, keep = rb.select(still), [keep[i] for i in still]
            live = {k: v.clone().requires_grad_(True) for k, v in deltas.items()}
            with torch.enable_grad():
                loss, terms = self._step(setup, rb, keep, live, active)
            out.forward_tokens += int(rb.batch.attention_mask.sum())  # cached prefixes excluded
            self._record(out, requests, active, step, loss, terms)
            cont = self._continues(loss, terms, step)
            if not cont.any():
                break
            loss.sum().backward()
            moving = active[cont]
            self._move(setup, deltas, live, adams, moving)
            active = moving
        out.z = {k: setup.ctx.anchor[k] + deltas[k] for k in deltas}
        out.target_prob = [float(torch.exp(torch.tensor(-x))) for x in out.nll]
        out.steps = [x + 1 for x in out.steps]
        out.seconds = time.perf_counter() - t0
        return out

    def _setup(self, requests: list[EditRequest], templates: list[str]) -> _Setup:
        """Rows, layout and one plain pass: the start state, the anchors, P_0 at the KL rows,
        the block arity; then the method's and the loss terms' ``prepare`` and the norms."""
        s, model, adapter, dev = self.s, self.model, self.adapter, self.device
        full = self.build_rows(requests, templates)
        layout = (prefix_cached_layout(model, self.tok, full, dev, s.group_overhead) if s.prefix_cache
                  else full_layout(full, dev))
        n = len(requests)
        edit_pos = layout.subject_positions().to(dev)
        first_row = torch.tensor([next(i for i, r in enumerate(layout.rows) if r.request == j) for j in range(n)],
                                 device=dev)
        start = s.layer if all(site.kind == "block" for site in s.sites) else s.layer - 1
        paths = [adapter.path(site.kind, s.layer) for site in s.sites]
        ref_kinds = sorted({site.clamp_to for site in s.sites if site.clamp_to})
        ref_paths = [adapter.path(k, s.layer) for k in ref_kinds]
        start_path = [adapter.path("block", start)] if start >= 0 else []

        wanted = list(dict.fromkeys(paths + ref_paths + start_path))
        got: dict[str, torch.Tensor] = {}

        def plain():
            parts: dict[str, list[torch.Tensor]] = {p: [] for p in wanted}
            with capture(model, wanted, what="output") as seen:
                got["h"] = layout.final_hidden(model, lambda _g: [parts[p].append(seen[p]) for p in wanted])
            layout.after_step()
            got.update({p: layout.assemble(v) for p, v in parts.items()})

        with torch.no_grad():
            arity = block_output_arity(adapter.block(model, max(start, 0)), plain)
        hidden0 = got["h"]
        ar = torch.arange(len(layout.rows), device=dev)
        # per row (the anchor is the first row's); methods with per-prompt anchors (NAMET) read them
        row_values = {site.kind: got[p][ar, edit_pos].float() for site, p in zip(s.sites, paths)}
        kl_rows = [i for i, r in enumerate(layout.rows) if r.kind == "kl"]
        p0 = torch.zeros(n, logits_at(model, hidden0[:1, 0]).shape[-1], device=dev)
        if kl_rows:
            kpos = edit_pos[kl_rows]
            p0[[layout.rows[i].request for i in kl_rows]] = torch.log_softmax(logits_at(model, hidden0[kl_rows, kpos]), -1)
        ctx = StepContext(
            model=model, requests=list(requests), templates=list(templates), layout=layout,
            anchor={k: v[first_row] for k, v in row_values.items()}, first_row=first_row, row_values=row_values,
            reference={k: got[p][ar, edit_pos][first_row].float() for k, p in zip(ref_kinds, ref_paths)},
            kl_p0=p0, live_rows=ar,
        )
        self.prepare(layout, hidden0, ctx)
        with torch.no_grad():
            for term in self.loss_terms:
                term.prepare(layout, hidden0, ctx)
        clamp_norm, decay_div = {}, {}
        for site in s.sites:
            clamp_norm[site.kind], decay_div[site.kind] = self.norms(site, ctx)
        return _Setup(ctx, start, arity, got[start_path[0]].detach() if start_path else None, edit_pos,
                      layout.request_index().to(dev), clamp_norm, decay_div)

    def _step(self, setup: _Setup, rb: StepBatch, keep: list[int], live: dict[str, torch.Tensor],
              active: torch.Tensor) -> tuple[torch.Tensor, LossTerms]:
        """One forward with the live δ added at every row's edited token; the loss per active
        request. Every hook and the resumed blocks are undone however the forward ends."""
        s, model, adapter, dev = self.s, self.model, self.adapter, self.device
        keep_t = torch.tensor(keep, device=dev)
        setup.ctx.live_rows = keep_t
        add = {k: self._adder(v, rb, setup.edit_pos[keep_t], setup.req_of_row[keep_t]) for k, v in live.items()}
        h_rows = setup.h_start[keep_t] if setup.h_start is not None else None

        full = add["block"](h_rows) if "block" in add and h_rows is not None else h_rows

        def emit(_ignored):
            return rb.rows_of_current(full)

        with ExitStack() as stack:
            stack.callback(rb.after_step)  # drop this step's keys/values from the prefix cache
            if setup.start >= 0:
                stack.enter_context(resume_from(model, adapter, setup.start, setup.arity, emit))
            for site in s.sites:
                if site.kind != "block":
                    module = model.get_submodule(adapter.path(site.kind, s.layer))
                    stack.enter_context(edit_output(module, add[site.kind]))
            for term in self.loss_terms:
                for cm in getattr(term, "forward_hooks", lambda _m: [])(model):
                    stack.enter_context(cm)
            hidden = rb.final_hidden(model)
        terms = self.objective(rb, hidden, active, setup.ctx)
        wd = torch.zeros(len(active), device=dev)
        for site in s.sites:
            wd = wd + site.weight_decay * live[site.kind][active].norm(dim=-1) / setup.decay_div[site.kind][active]
        loss = s.nll_factor * terms.nll_weight * terms.nll + s.kl_factor * terms.kl + wd
        if terms.extra is not None:
            loss = loss + terms.extra
        return loss, terms

    @staticmethod
    def _record(out: TargetResult, requests: list[EditRequest], active: torch.Tensor, step: int,
                loss: torch.Tensor, terms: LossTerms) -> None:
        if not torch.isfinite(loss).all():
            bad = [requests[int(active[i])].id for i in range(len(active)) if not torch.isfinite(loss[i])]
            raise OptimizationError(f"non-finite target loss for request(s) {', '.join(bad)} at step {step}")
        loss_d, nll_d = loss.detach(), terms.nll.detach()
        out.history.append(float(loss_d.sum()))
        for i, j in enumerate(active.tolist()):
            out.loss[j], out.nll[j], out.steps[j] = float(loss_d[i]), float(nll_d[i]), step
        for name, value in terms.values.items():
            got = out.terms.setdefault(name, [float("nan")] * len(requests))
            for j, v in zip(active.tolist(), value.detach().tolist()):
                got[j] = v

    def _continues(self, loss: torch.Tensor, terms: LossTerms, step: int) -> torch.Tensor:
        """Which active requests take another step: loss above ``early_stop_loss``, unless a
        method's own rule stops them, always while a loss term holds them; none at the last."""
        if step == self.s.steps - 1:
            return torch.zeros_like(loss, dtype=torch.bool)
        cont = loss >= self.s.early_stop_loss
        if terms.stop is not None:
            cont = cont & ~terms.stop
        if terms.hold is not None:
            cont = cont | terms.hold
        return cont

    def _move(self, setup: _Setup, deltas: dict[str, torch.Tensor], live: dict[str, torch.Tensor],
              adams: dict[str, "_Adam"], moving: torch.Tensor) -> None:
        """The Adam step of the moving requests, then each δ clamped to its norm ball."""
        for site in self.s.sites:
            k = site.kind
            adams[k].step(deltas[k], live[k].grad, moving)
            max_norm = site.clamp_norm_factor * setup.clamp_norm[k][moving]
            norms = deltas[k][moving].norm(dim=-1)
            scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
            deltas[k][moving] *= scale[:, None]

    @staticmethod
    def _adder(delta: torch.Tensor, rb: StepBatch, rows_pos: torch.Tensor, rows_req: torch.Tensor):
        """Adds each row's request's δ at its edited token, on every row of ``rb`` or (inside
        a forward) on the running group's rows."""
        def add(h: torch.Tensor) -> torch.Tensor:
            g = rb.current
            pos, req = (rows_pos, rows_req) if g is None else (rows_pos[g.rows], rows_req[g.rows])
            h = h.clone()
            ar = torch.arange(h.shape[0], device=h.device)
            h[ar, pos] = h[ar, pos] + delta[req].to(h.dtype)
            return h

        return add
