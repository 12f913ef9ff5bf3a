"""RLEdit's gradient handling against a hand computation on the tiny model (issue 24, item 6).

The hand computation is plain torch outside TrainingRun: per batch, the shifts are computed
with their graph, put into the model through ``torch.func.functional_call`` and the loss is
back-propagated by autograd straight into the hypernetwork (not through the decomposed
backward of editing/rledit/objective.py); the L2 term on the shifts is added to the loss as RLEdit's code adds
it (from shifts without a gradient) or, for ``summed``, with its gradient; the accumulated
gradient is clipped with ``clip_grad_norm_`` after every batch (reference) or once before
the optimizer step (summed); Adam's update is written out. TrainingRun must give the same
parameters, and the two handlings must differ exactly where they should.
"""

from __future__ import annotations

import pytest
import torch
from test_rledit import _editor, _examples
from torch.nn.utils import clip_grad_norm_

from editprobe.editing.rledit import Hypernetwork, RLEditSettings, TrainingRun
from editprobe.editing.rledit.cache import keys_and_value_grads, teacher_forced

# 4 batches of 4 edits, an optimizer step every 2 batches; a clip bound that every batch's
# gradient exceeds (the tiny model's per-batch norms are about 0.05-0.5), and an L2 weight
# large enough for its gradient to move Adam's direction.
BINDING = RLEditSettings(layers=[2, 3], rank=16, n_blocks=2, lr=1e-3, meta_lr=1e-3, back_depth=3, seed=0,
                         n_steps=4, batch_size=4, update_every=2, max_grad_norm=1e-3, reg_coef=10.0)
EXAMPLES = _examples(16, seed=3)


class HandAdam:
    """Adam (β 0.9, 0.999, ε 1e-8, no weight decay), written out."""

    def __init__(self, params: list[torch.Tensor], lr: float) -> None:
        self.params, self.lr, self.t = params, lr, 0
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]

    @torch.no_grad()
    def step(self) -> None:
        self.t += 1
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            m.mul_(0.9).add_(0.1 * g)
            v.mul_(0.999).add_(0.001 * g * g)
            m_hat, v_hat = m / (1 - 0.9**self.t), v / (1 - 0.999**self.t)
            p.sub_(self.lr * m_hat / (v_hat.sqrt() + 1e-8))


def _window_loss(model, weights, window, before, tok, settings):
    """The loss over the window (newest batch first): weighted CE of the new answers on the
    equivalent prompts, loc_coef-weighted KL(before ‖ after) on the unrelated ones."""
    pairs, row_weights, is_loc = [], [], []
    for age, batch in enumerate(reversed(window)):
        for ex in batch:
            for pair in ex.equivalents:
                pairs.append(pair), row_weights.append(settings.time_decay**age / len(ex.equivalents))
                is_loc.append(False)
            for pair in ex.unrelated:
                pairs.append(pair), is_loc.append(True)
                row_weights.append(settings.loc_coef * settings.time_decay**age / len(ex.unrelated))
    scored = teacher_forced(tok, pairs, "cpu")
    inputs = {"input_ids": scored.input_ids, "attention_mask": scored.attention_mask}
    if before is None:
        with torch.no_grad():
            return torch.log_softmax(model(**inputs).logits.float(), -1)
    log_p = torch.log_softmax(torch.func.functional_call(model, weights, (), inputs).logits.float(), -1)
    nll = -log_p.gather(-1, scored.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    kl = (before.exp() * (before - log_p)).sum(-1)
    per_token = torch.where(torch.tensor(is_loc)[:, None], kl, nll) * scored.answer
    return (per_token.sum(-1) * torch.tensor(row_weights)).sum()


def by_hand(settings: RLEditSettings, examples) -> dict[str, torch.Tensor]:
    """The hypernetwork's parameters after the training sequence, computed without TrainingRun."""
    editor = _editor(settings)  # only for the tiny model, its tokenizer and the edit modules
    model, tok, modules = editor.model, editor.tok, editor.modules
    hp = Hypernetwork(settings, editor.hypernet.shapes)  # same seed: the same initial network
    params = list(hp.parameters())
    adam = HandAdam(params, settings.meta_lr)
    original = {n: m.weight.detach().clone() for n, m in modules.items()}
    accum = {n: torch.zeros_like(w) for n, w in original.items()}
    total = settings.n_steps
    window: list = []
    for t in range(total):
        batch = examples[t * settings.batch_size:(t + 1) * settings.batch_size]
        edits = teacher_forced(tok, [ex.edit for ex in batch], "cpu")
        cached = keys_and_value_grads(model, modules, edits)
        for name, (keys, grads) in cached.items():
            hp.net_of(name)[0].normalizer.update(torch.cat((keys, grads), -1))
        window = (window + [batch])[-settings.back_depth:]
        before = _window_loss(model, None, window, None, tok, settings)
        shifts = {name: hp.shift(name, keys, grads) for name, (keys, grads) in cached.items()}  # with graph
        weights = {f"{n}.weight": original[n] + (accum[n] + shifts[n].T) for n in modules}  # as editor.write sums
        loss = _window_loss(model, weights, window, before, tok, settings)
        if settings.grad_handling == "reference":  # RLEdit: L2 of shifts that carry no gradient
            loss = loss + settings.reg_coef * sum((s.detach() ** 2).sum() for s in shifts.values())
        else:
            loss = loss + settings.reg_coef * sum((s**2).sum() for s in shifts.values())
        loss.backward()
        update = (t + 1) % (settings.update_every or total) == 0 or t + 1 == total
        if settings.grad_handling == "reference" or update:
            clip_grad_norm_(params, settings.max_grad_norm)
        if update:
            adam.step()
            for p in params:
                p.grad = None
        with torch.no_grad():  # the shifts stay: the edits accumulate
            for n, m in modules.items():
                accum[n] += shifts[n].detach().T
                m.weight.copy_(original[n] + accum[n])
    return {k: v.detach().clone() for k, v in hp.state_dict().items()}


def by_training_run(settings: RLEditSettings, examples) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(initial, trained) parameters of the hypernetwork through TrainingRun."""
    editor = _editor(settings)
    initial = {k: v.detach().clone() for k, v in editor.hypernet.state_dict().items()}
    TrainingRun(editor, examples).run()
    return initial, {k: v.detach().clone() for k, v in editor.hypernet.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    """The largest difference of a trained parameter (the normalisers' statistics left out)."""
    return max(float((a[k] - b[k]).abs().max()) for k in a if ".normalizer." not in k)


def _assert_same(run: dict, hand: dict, meta_lr: float) -> None:
    # Adam moves each parameter by about meta_lr per step; rounding (the decomposed backward
    # against autograd, Adam's fused arithmetic) may move the result by a few 1e-5 of that
    # (measured: at most 8e-8 at meta_lr 1e-3). The normalisers' statistics see the edited
    # model, so they carry that rounding too, relative to their size.
    for key in hand:
        if ".normalizer." in key:
            assert torch.allclose(run[key], hand[key], rtol=0, atol=1e-6 * float(hand[key].abs().max())), key
        else:
            assert torch.allclose(run[key], hand[key], rtol=0, atol=5e-4 * meta_lr), (key, _max_diff(run, hand))


@pytest.mark.parametrize("handling", ["reference", "summed"])
def test_training_run_equals_the_hand_computation(handling):
    settings = BINDING.model_copy(update={"grad_handling": handling})
    initial, run = by_training_run(settings, EXAMPLES)
    hand = by_hand(settings, EXAMPLES)
    assert _max_diff(run, initial) > settings.meta_lr  # it trained: two Adam steps moved it
    _assert_same(run, hand, settings.meta_lr)


@pytest.mark.parametrize("changes", [{}, {"reg_coef": 0.0}, {"max_grad_norm": 1e6}],
                         ids=["clip-binds-and-l2", "clip-binds-alone", "l2-alone"])
def test_the_handlings_differ_where_clipping_binds_between_optimizer_steps_or_the_l2_term_counts(changes):
    settings = BINDING.model_copy(update=changes)
    _, reference = by_training_run(settings, EXAMPLES)
    _, summed = by_training_run(settings.model_copy(update={"grad_handling": "summed"}), EXAMPLES)
    assert _max_diff(reference, summed) > settings.meta_lr  # some parameter moved the other way


@pytest.mark.parametrize("changes", [{"update_every": 1}, {"max_grad_norm": 1e6}])
def test_the_handlings_are_identical_without_an_l2_term_when_clipping_cannot_differ(changes):
    """An optimizer step per batch (clipping once per batch either way), or a bound no
    gradient reaches: without the L2 term the two handlings are the same computation."""
    settings = BINDING.model_copy(update={"reg_coef": 0.0, **changes})
    _, reference = by_training_run(settings, EXAMPLES)
    _, summed = by_training_run(settings.model_copy(update={"grad_handling": "summed"}), EXAMPLES)
    assert all(torch.equal(reference[k], summed[k]) for k in reference)
