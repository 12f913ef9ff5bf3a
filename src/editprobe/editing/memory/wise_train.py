"""One batch of WISE training: the side memory (fp32) alone learns the batch's edits, under
the paper's loss (Wang et al., 2024, eq. 5-6; EasyEdit ``WISE._cal_ft_loss`` and
``_cal_activation_loss`` are the reference read):

- the target's NLL after each edit statement (bare and behind the context prefixes), with
  the side memory in place of the layer's output projection at every position;
- the routing margins on the per-row mean Δ (wise_memory.py): an edit's rows above
  ``beta``, its irrelevant prompt's row below ``alpha``, and every edit row above its
  irrelevant row by ``gamma``; each term the mean of its violations (zero without any).

SGD with the gradient masked to the shard's random entries (knowledge sharding), then each
entry clamped to within ``norm_constraint`` of the main memory's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...models.resume_forward import logits_at
from ...models.tokens import Batch, make_batch

STOP_TOLERANCE = 1e-4  # EasyEdit's EarlyStopMeter: two losses this close, the last below early_stop_loss


@dataclass(frozen=True)
class Row:
    """One training sequence: an edit statement (``request`` ≥ 0, target ``labels`` predicted
    from ``start`` on) or an irrelevant prompt (``labels`` empty) paired with ``request``."""

    request: int
    ids: list[int]
    start: int = 0
    labels: tuple[int, ...] = ()
    bare: bool = False

    @property
    def is_edit(self) -> bool:
        return bool(self.labels)


def positive_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of the positive entries, 0 when there are none (EasyEdit's hinge terms)."""
    hit = values[values > 0]
    return hit.mean() if hit.numel() else values.new_zeros(())


def margin_loss(acts: torch.Tensor, rows: list[Row], n_requests: int, alpha: float, beta: float,
                gamma: float) -> torch.Tensor:
    """The routing margins, averaged over the batch's requests (each with its rows)."""
    terms = []
    for r in range(n_requests):
        inside = acts[[i for i, row in enumerate(rows) if row.request == r and row.is_edit]]
        outside = acts[[i for i, row in enumerate(rows) if row.request == r and not row.is_edit]]
        terms.append(positive_mean(outside[:, None] - inside[None, :] + gamma)
                     + positive_mean(outside - alpha) + positive_mean(beta - inside))
    return torch.stack(terms).mean()


class SideTraining:
    """The forward of the model with one side weight in the edit layer's output projection,
    returning per row the mean Δ over its tokens and the targets' NLL."""

    def __init__(self, model, tok, module, main: torch.Tensor, bias: torch.Tensor | None, rows: list[Row]):
        self.model, self.module, self.main, self.bias, self.rows = model, module, main, bias, rows
        self.device = main.device
        self.batch: Batch = make_batch(tok, [r.ids for r in rows], "right").to(self.device)
        self.valid = self.batch.attention_mask.float()
        self.row_idx = torch.tensor([i for i, r in enumerate(rows) for _ in r.labels], device=self.device)
        self.pos_idx = torch.tensor([r.start + k for r in rows for k in range(len(r.labels))], device=self.device)
        self.labels = torch.tensor([y for r in rows for y in r.labels], device=self.device)
        self.edit_rows = torch.tensor([r.is_edit for r in rows], device=self.device)

    def forward(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-row mean Δ over its real tokens, per edit row mean target NLL)."""
        seen = {}

        def side(_module, args, output):
            a = args[0].float()
            out = F.linear(a, weight, None if self.bias is None else self.bias.float())
            seen["acts"] = F.linear(a, weight - self.main).norm(dim=-1)
            return out.to(output.dtype)

        handle = self.module.register_forward_hook(side)
        try:
            hidden = self.model.base_model(input_ids=self.batch.input_ids, attention_mask=self.batch.attention_mask,
                                           use_cache=False).last_hidden_state
        finally:
            handle.remove()
        acts = (seen["acts"] * self.valid).sum(-1) / self.valid.sum(-1)
        logits = logits_at(self.model, hidden[self.row_idx, self.pos_idx]).float()
        token_nll = F.cross_entropy(logits, self.labels, reduction="none")
        n_rows = len(self.rows)
        sums = torch.zeros(n_rows, device=self.device).index_add(0, self.row_idx, token_nll)
        counts = torch.zeros(n_rows, device=self.device).index_add(0, self.row_idx, torch.ones_like(token_nll))
        return acts, (sums / counts.clamp(min=1))[self.edit_rows]


def train_side(training: SideTraining, start: torch.Tensor, mask: torch.Tensor, hp, n_requests: int
               ) -> tuple[torch.Tensor, int, list[float]]:
    """The batch's steps on a copy of ``start``; returns (new weight, steps taken, loss before each)."""
    alpha, beta, gamma = hp.act_margin
    weight = start.clone().requires_grad_(True)
    opt = torch.optim.SGD([weight], lr=hp.edit_lr, weight_decay=hp.weight_decay)
    low = high = None
    if hp.norm_constraint is not None:
        low, high = training.main - hp.norm_constraint, training.main + hp.norm_constraint
    history: list[float] = []
    steps = 0
    for step in range(hp.n_iter):
        acts, nll = training.forward(weight)
        loss = nll.mean() + margin_loss(acts, training.rows, n_requests, alpha, beta, gamma)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"wise: non-finite loss at step {step}")
        if (hp.early_stop_loss is not None and len(history) >= 2
                and abs(history[-1] - history[-2]) <= STOP_TOLERANCE and history[-1] <= hp.early_stop_loss):
            break
        history.append(float(loss.detach()))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        weight.grad.mul_(mask)  # only this shard's entries learn
        opt.step()
        steps += 1
        if low is not None:
            with torch.no_grad():
                weight.copy_(torch.clamp(weight, low, high))
    return weight.detach(), steps, history


@torch.no_grad()
def request_acts(training: SideTraining, weight: torch.Tensor, n_requests: int) -> list[float]:
    """Each request's mean Δ over its edit rows under ``weight``: what its shard's threshold
    comes from (EasyEdit ``save_editing_activation``)."""
    acts, _ = training.forward(weight)
    out = []
    for r in range(n_requests):
        rows = [i for i, row in enumerate(training.rows) if row.request == r and row.is_edit]
        out.append(float(acts[rows].mean()))
    return out
