"""What RLEdit's hypernetwork reads: for a batch of (prompt, answer) pairs, each edit
module's input (the key) and the gradient of the answer's cross-entropy with respect to its
output (the value gradient), at the positions whose next token is an answer token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ...models.tokens import continuation_ids, encode


@dataclass
class TeacherForced:
    input_ids: torch.Tensor  # [b, t], right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor  # [b, t]: the next token where it is an answer token, else -100
    answer: torch.Tensor  # [b, t] bool: positions that predict an answer token


def teacher_forced(tok, pairs: list[tuple[str, str]], device) -> TeacherForced:
    rows, label_rows = [], []
    for prompt, answer in pairs:
        prompt_ids = encode(tok, prompt)
        answer_ids = continuation_ids(tok, prompt, answer)
        ids = prompt_ids + answer_ids
        rows.append(ids)
        # position i predicts token i + 1: the last prompt position and all but the last answer one
        label_rows.append([-100] * (len(prompt_ids) - 1) + answer_ids + [-100])
    width = max(len(r) for r in rows)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, lab) in enumerate(zip(rows, label_rows)):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
        labels[i, : len(lab)] = torch.tensor(lab)
    return TeacherForced(input_ids.to(device), mask.to(device), labels.to(device), (labels != -100).to(device))


def answer_loss(logits: torch.Tensor, batch: TeacherForced) -> torch.Tensor:
    """Cross-entropy summed over answer tokens, averaged over the pairs."""
    log_probs = torch.log_softmax(logits.float(), -1)
    picked = log_probs.gather(-1, batch.labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return -(picked * batch.answer).sum() / batch.input_ids.shape[0]


class ModuleProbe:
    """During one forward pass, records each module's input and adds a zero tensor to its
    output whose gradient is then d loss / d output (the model's own weights stay frozen)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.modules = modules
        self.inputs: dict[str, torch.Tensor] = {}
        self.zeros: dict[str, torch.Tensor] = {}
        self._handles = []

    def __enter__(self) -> "ModuleProbe":
        def hook(name):
            def record(module, args, output):
                self.inputs[name] = args[0].detach()
                self.zeros[name] = torch.zeros_like(output, requires_grad=True)
                return output + self.zeros[name]
            return record

        self._handles = [m.register_forward_hook(hook(name)) for name, m in self.modules.items()]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()

    def grads(self, name: str) -> torch.Tensor:
        grad = self.zeros[name].grad
        return torch.zeros_like(self.zeros[name]) if grad is None else grad


def keys_and_value_grads(model: nn.Module, modules: dict[str, nn.Module], batch: TeacherForced
                         ) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module name: (keys [n, d_in], value grads [n, d_out])} over the n answer positions,
    in float32, from one forward and one backward pass of the model as it is now."""
    with ModuleProbe(modules) as probe, torch.enable_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        answer_loss(logits, batch).backward()
    model.zero_grad(set_to_none=True)  # a model with trainable weights must not keep these
    where = batch.answer
    return {name: (probe.inputs[name][where].float(), probe.grads(name)[where].float()) for name in modules}


def weight_grads(model: nn.Module, modules: dict[str, nn.Module], loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``loss_fn(model)``'s value and, per module, d loss / d S for a shift S ``[d_in, d_out]``
    added to the module's map (x -> x W^T + x S): Σ over tokens of k gᵀ."""
    with ModuleProbe(modules) as probe, torch.enable_grad():
        loss = loss_fn(model)
        loss.backward()
    model.zero_grad(set_to_none=True)
    grads = {}
    for name in modules:
        keys = probe.inputs[name].float().flatten(0, -2)
        value_grads = probe.grads(name).float().flatten(0, -2)
        grads[name] = keys.T @ value_grads
    return loss.detach(), grads
