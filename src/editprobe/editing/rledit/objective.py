"""Training RLEdit's hypernetwork over a sequence of edit batches (docs/rledit.md).

At step t the batch's keys and value gradients are cached on the model as edited by steps
< t, the hypernetwork's shifts are applied (they stay: the edits accumulate, as in lifelong
editing), and the loss over the last ``back_depth`` batches j is

    Σ_j γ^(t−j) [ CE(new answers | batch j's equivalent prompts)
                  + loc_coef · KL(P_before ‖ P_after) on batch j's unrelated prompts ]
    + reg_coef · Σ_modules ‖S_t‖²,

with P_before the model before step t's shift. Its gradient reaches the hypernetwork through
the shifts (MALMEN's decomposed backward: d loss / d S from one pass over the model, then
back through the least-squares solve and the network). The L2 term counts in the reported
loss; its gradient only with ``grad_handling: summed`` (RLEdit's code computes it from
shifts that carry no gradient). Gradients accumulate over ``update_every`` steps between
optimizer steps (RLEdit's code: one step per sequence); the clipping and the loop, with
checkpoints and resume, are loop.py's.

Deviations, named: one forward pass scores the equivalent and the unrelated prompts
together (the reference runs two backward passes); CE and KL are sums over answer tokens
averaged over prompts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .cache import keys_and_value_grads, teacher_forced, weight_grads
from .editor import RLEditEditor


@dataclass
class TrainingExample:
    edit: tuple[str, str]  # (prompt, new answer)
    equivalents: list[tuple[str, str]] = field(default_factory=list)  # paraphrases, new answer
    unrelated: list[tuple[str, str]] = field(default_factory=list)  # locality prompts, their answers


def examples_from_records(records) -> list[TrainingExample]:
    """Training examples from EditRecords: the paraphrases (or the edit prompt itself) as
    equivalents, the neighborhood prompts as unrelated."""
    out = []
    for r in records:
        edit = (r.query, r.target_new)
        equivalents = [(p, r.target_new) for p in r.paraphrase_prompts] or [edit]
        unrelated = [(n.prompt, n.answer) for n in r.neighborhood]
        out.append(TrainingExample(edit, equivalents, unrelated))
    return out


def _rows(window: Sequence[list[TrainingExample]], decay: float, loc_coef: float):
    """(pairs, weights, is_locality) of one scoring pass over the window, newest batch last."""
    pairs, weights, loc = [], [], []
    for age, batch in enumerate(reversed(window)):
        for ex in batch:
            for pair in ex.equivalents:
                pairs.append(pair), weights.append(decay**age / len(ex.equivalents)), loc.append(False)
            for pair in ex.unrelated:
                pairs.append(pair), weights.append(loc_coef * decay**age / len(ex.unrelated)), loc.append(True)
    return pairs, torch.tensor(weights), torch.tensor(loc)


def train_step(editor: RLEditEditor, batch: list[TrainingExample], window: deque) -> dict[str, float]:
    """One step of the sequence: edit with ``batch`` and accumulate the hypernetwork's gradient."""
    hp, settings, model = editor.hypernet, editor.hypernet.settings, editor.model
    edits = teacher_forced(editor.tok, [ex.edit for ex in batch], editor.device)
    cached = keys_and_value_grads(model, editor.modules, edits)
    for name, (keys, grads) in cached.items():
        hp.net_of(name)[0].normalizer.update(torch.cat((keys, grads), -1))
    with torch.no_grad():
        shifts = {name: hp.shift(name, keys, grads) for name, (keys, grads) in cached.items()}
    window.append(batch)
    pairs, weights, is_loc = _rows(window, settings.time_decay, settings.loc_coef)
    scored = teacher_forced(editor.tok, pairs, editor.device)
    weights, is_loc = weights.to(editor.device), is_loc.to(editor.device)
    with torch.no_grad():
        before = torch.log_softmax(model(input_ids=scored.input_ids, attention_mask=scored.attention_mask).logits.float(), -1)
    editor.write(shifts)

    def loss_fn(m):
        log_p = torch.log_softmax(m(input_ids=scored.input_ids, attention_mask=scored.attention_mask).logits.float(), -1)
        nll = -log_p.gather(-1, scored.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        kl = (before.exp() * (before - log_p)).sum(-1)
        per_token = torch.where(is_loc[:, None], kl, nll) * scored.answer
        return (per_token.sum(-1) * weights).sum()

    loss, shift_grads = weight_grads(model, editor.modules, loss_fn)
    for name, (keys, grads) in cached.items():  # back through the solve and the network
        shift = hp.shift(name, keys, grads)
        grad = shift_grads[name]
        if settings.grad_handling == "summed":  # the reference's L2 term has no gradient
            grad = grad + 2 * settings.reg_coef * shift.detach()
        (shift * grad).sum().backward()
    reg = settings.reg_coef * sum(float((s**2).sum()) for s in shifts.values())
    return {"loss": float(loss) + reg, "edit_loss": _edit_loss(editor, edits)}


@torch.no_grad()
def _edit_loss(editor: RLEditEditor, edits) -> float:
    from .cache import answer_loss

    logits = editor.model(input_ids=edits.input_ids, attention_mask=edits.attention_mask).logits
    return float(answer_loss(logits, edits))
