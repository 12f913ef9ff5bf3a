"""Target optimization (lte-methods.md §1.5), batched across all requests of a batch.

One forward and backward per step serves every request's rewriting prompts and KL prompt
together. Each request has its own free vector(s), clamp and early stop: the summed loss
gives every request exactly the gradient it would get alone, Adam is per-request (so a
finished request's vector stays frozen, momentum included), and finished requests leave
the batch. Layers below the start layer run once; logits are computed only at target and
KL positions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from ..data.records import EditRequest
from ..models.adapters import ModelAdapter
from ..models.hooks import capture, edit_output
from .layout import StepBatch, full_layout, prefix_cached_layout
from .prompts import RowBatch, batch_rows, rewrite_rows
from .replay import block_output_arity, final_hidden, logits_at, replay_from


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
    # = the block output at the same layer (FE's PMET/AdaEdit clamp δ_mlp that way).
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


def _site_path(adapter: ModelAdapter, kind: str, layer: int) -> str:
    return adapter.path(kind, layer)


class TargetOptimizer:
    """Computes z for a batch of requests. Subclasses change the objective (see ``losses``)."""

    def __init__(self, model, tok, adapter: ModelAdapter, settings: TargetSettings):
        self.model, self.tok, self.adapter, self.s = model, tok, adapter, settings
        self.device = next(model.parameters()).device

    # --- the pieces a method may override ---------------------------------------------------
    def build_rows(self, requests: list[EditRequest], templates: list[str]) -> RowBatch:
        rows = rewrite_rows(self.tok, requests, templates, self.s.kl_prompt)
        return batch_rows(self.tok, rows, self.s.padding_side)

    def losses(self, rb: StepBatch, hidden: torch.Tensor, active: torch.Tensor, ctx: dict) -> dict[str, torch.Tensor]:
        """Per-active-request loss terms from the final hidden states of ``rb``'s rows."""
        n = len(active)
        local = {int(r): i for i, r in enumerate(active.tolist())}
        nll = torch.zeros(n, device=self.device)
        count = torch.zeros(n, device=self.device)
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
        row_sum = torch.zeros(n_rows, device=self.device).index_add(0, row_of_tok, token_lp)
        row_len = torch.zeros(n_rows, device=self.device).index_add(0, row_of_tok, torch.ones_like(token_lp))
        req_local = torch.tensor([local[r.request] for r in rb.rows], device=self.device)
        is_rw = torch.tensor([r.kind == "rewrite" for r in rb.rows], device=self.device)
        per_row = torch.where(is_rw, row_sum / row_len.clamp(min=1), torch.zeros_like(row_sum))
        nll = nll.index_add(0, req_local, -per_row)
        count = count.index_add(0, req_local, is_rw.float())
        nll = nll / count
        # per request: every target token of every rewriting row is the argmax (PMET's test)
        with torch.no_grad():
            miss = (logp.argmax(-1) != torch.tensor(tgt_lab, device=self.device)).float()
            row_miss = torch.zeros(n_rows, device=self.device).index_add(0, row_of_tok, miss)
            top1 = torch.zeros(n, device=self.device).index_add(0, req_local, row_miss) == 0
        if kl_rows and self.s.kl_factor:
            kl_logp = torch.log_softmax(logits_at(self.model, hidden[kl_rows, kl_pos]), -1)
            p0 = ctx["kl_p0"][[rb.rows[i].request for i in kl_rows]]
            kl_each = (kl_logp.exp() * (kl_logp - p0)).sum(-1)  # KL(P_delta || P_0)
            kl = kl.index_add(0, req_local[kl_rows], kl_each)
        return {"nll": nll, "kl": kl, "top1": top1}

    def norms(self, site: Site, ctx: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per request: the norm a site's δ is clamped relative to, and the divisor of its
        weight decay w·‖δ‖/divisor (§1.5: ‖h0‖ and ‖h0‖²). Methods may change both."""
        own = ctx["anchor"][site.kind].norm(dim=-1)
        ref = ctx["reference"][site.clamp_to].norm(dim=-1) if site.clamp_to else own
        return ref, own.pow(2)

    # --- the loop ---------------------------------------------------------------------------
    def run(self, requests: list[EditRequest], templates: list[str]) -> TargetResult:
        t0 = time.perf_counter()
        s, model, adapter, dev = self.s, self.model, self.adapter, self.device
        full = self.build_rows(requests, templates)
        layout = prefix_cached_layout(model, self.tok, full, dev) if s.prefix_cache else full_layout(full, dev)
        n = len(requests)
        d = adapter.d_model(model)
        subj_pos = layout.subject_positions().to(dev)
        req_of_row = layout.request_index().to(dev)
        first_row = torch.tensor([next(i for i, r in enumerate(layout.rows) if r.request == j) for j in range(n)], device=dev)
        only_block = all(site.kind == "block" for site in s.sites)
        start = s.layer if only_block else s.layer - 1

        # One plain pass: the start state, the anchors, P_0 at the KL rows, the block arity.
        paths = [_site_path(adapter, site.kind, s.layer) for site in s.sites]
        ref_kinds = sorted({site.clamp_to for site in s.sites if site.clamp_to})
        ref_paths = [_site_path(adapter, k, s.layer) for k in ref_kinds]
        start_path = [adapter.path("block", start)] if start >= 0 else []
        arity_holder: list[int] = []

        def plain():
            out = final_hidden(model, layout)
            layout.after_step()
            return out

        with torch.no_grad(), capture(model, paths + ref_paths + start_path, what="output") as got:
            arity_holder.append(block_output_arity(adapter.block(model, max(start, 0)), lambda: got.setdefault("h", plain())))
        hidden0 = got["h"]
        ar = torch.arange(len(layout.rows), device=dev)
        # per row (the anchor is the first row's); methods with per-prompt anchors (NAMET) read them
        row_values = {site.kind: got[p][ar, subj_pos].float() for site, p in zip(s.sites, paths)}
        anchor = {k: v[first_row] for k, v in row_values.items()}
        h_start = got[start_path[0]].detach() if start_path else None
        reference = {k: got[p][ar, subj_pos][first_row].float() for k, p in zip(ref_kinds, ref_paths)}
        ctx = {"anchor": anchor, "first_row": first_row, "row_values": row_values, "reference": reference}
        kl_rows = [i for i, r in enumerate(layout.rows) if r.kind == "kl"]
        p0 = torch.zeros(n, logits_at(model, hidden0[:1, 0]).shape[-1], device=dev)
        if kl_rows:
            kpos = subj_pos[kl_rows]
            p0[[layout.rows[i].request for i in kl_rows]] = torch.log_softmax(logits_at(model, hidden0[kl_rows, kpos]), -1)
        ctx["kl_p0"] = p0
        self.prepare(layout, hidden0, ctx)
        clamp_norm, decay_div = {}, {}
        for site in s.sites:
            clamp_norm[site.kind], decay_div[site.kind] = self.norms(site, ctx)

        deltas = {site.kind: torch.zeros(n, d, device=dev) for site in s.sites}
        adams = {site.kind: _Adam((n, d), s.lr, dev) for site in s.sites}
        loss_out = [float("nan")] * n
        nll_out = [float("nan")] * n
        steps_out = [0] * n
        active = torch.arange(n, device=dev)
        history: list[float] = []
        tokens = 0
        rb, keep = layout, list(range(len(layout.rows)))  # rows still optimized (indices into layout)
        for step in range(s.steps):
            live_requests = set(active.tolist())
            still = [i for i, g in enumerate(keep) if layout.rows[g].request in live_requests]
            if len(still) < len(keep):
                rb, keep = rb.select(still), [keep[i] for i in still]
            keep_t = torch.tensor(keep, device=dev)
            rows_req = req_of_row[keep_t]
            rows_pos = subj_pos[keep_t]
            rows_ar = torch.arange(len(keep), device=dev)
            live = {k: v.clone().requires_grad_(True) for k, v in deltas.items()}
            hooks = []
            for site in s.sites:
                if site.kind == "block":
                    continue
                module = model.get_submodule(_site_path(adapter, site.kind, s.layer))
                hooks.append(edit_output(module, self._adder(live[site.kind], rows_ar, rows_pos, rows_req)))

            def emit(_ignored, h_rows=h_start[keep_t] if h_start is not None else None):
                if "block" in live:
                    return self._adder(live["block"], rows_ar, rows_pos, rows_req)(h_rows)
                return h_rows

            with torch.enable_grad():
                stack = [replay_from(model, adapter, start, arity_holder[0], emit)] if start >= 0 else []
                for cm in stack + hooks:
                    cm.__enter__()
                try:
                    hidden = final_hidden(model, rb)
                finally:
                    rb.after_step()
                    for cm in reversed(stack + hooks):
                        cm.__exit__(None, None, None)
                tokens += int(rb.batch.attention_mask.sum())  # tokens fed this step (cached prefixes excluded)
                terms = self.losses(rb, hidden, active, ctx)
                wd = torch.zeros(len(active), device=dev)
                for site in s.sites:
                    wd = wd + site.weight_decay * live[site.kind][active].norm(dim=-1) / decay_div[site.kind][active]
                # nll_weight: a per-request factor a method may set per step (PMET's adaptive NLL)
                nll_w = terms.get("nll_weight", 1.0)
                loss = s.nll_factor * nll_w * terms["nll"] + s.kl_factor * terms["kl"] + wd + terms.get("extra", 0.0)
            if not torch.isfinite(loss).all():
                bad = [requests[int(active[i])].id for i in range(len(active)) if not torch.isfinite(loss[i])]
                raise OptimizationError(f"non-finite target loss for request(s) {', '.join(bad)} at step {step}")
            loss_d, nll_d = loss.detach(), terms["nll"].detach()
            history.append(float(loss_d.sum()))
            for i, j in enumerate(active.tolist()):
                loss_out[j], nll_out[j], steps_out[j] = float(loss_d[i]), float(nll_d[i]), step
            cont = (loss >= s.early_stop_loss) if step < s.steps - 1 else torch.zeros_like(loss, dtype=torch.bool)
            if "stop" in terms:  # a method's own stopping rule (PMET: target top-1 and KL small)
                cont = cont & ~terms["stop"]
            if not cont.any():
                break
            loss.sum().backward()
            moving = active[cont]
            for site in s.sites:
                k = site.kind
                adams[k].step(deltas[k], live[k].grad, moving)
                max_norm = site.clamp_norm_factor * clamp_norm[k][moving]
                norms = deltas[k][moving].norm(dim=-1)
                scale = torch.where(norms > max_norm, max_norm / norms, torch.ones_like(norms))
                deltas[k][moving] *= scale[:, None]
            active = moving
        z = {k: anchor[k] + deltas[k] for k in deltas}
        return TargetResult(
            z=z,
            anchor=anchor,
            loss=loss_out,
            nll=nll_out,
            target_prob=[float(torch.exp(torch.tensor(-x))) for x in nll_out],
            steps=[x + 1 for x in steps_out],
            seconds=time.perf_counter() - t0,
            forward_tokens=tokens,
            history=history,
        )

    def prepare(self, layout: StepBatch, hidden0: torch.Tensor, ctx: dict) -> None:
        """Hook for objectives that need extra reference values (e.g. a teacher pass)."""

    @staticmethod
    def _adder(delta: torch.Tensor, rows_ar, rows_pos, rows_req):
        def add(h: torch.Tensor) -> torch.Tensor:
            h = h.clone()
            h[rows_ar, rows_pos] = h[rows_ar, rows_pos] + delta[rows_req].to(h.dtype)
            return h

        return add
