"""A training run of RLEdit's hypernetwork that can be killed and resumed exactly: after
every ``checkpoint_every`` steps it saves (atomically) the hypernetwork with its
normalisers, the gradients accumulated since the last optimizer step, Adam's state, the
model's accumulated shifts, the step and the losses so far. Training is deterministic, so a
resumed run ends where an uninterrupted one does.

The gradient (``grad_handling``): ``reference``, as RLEdit's ``update_hypernet``, clips the
accumulated gradient after every batch; ``summed`` clips the sum once before each optimizer
step. Either way the checkpointed gradient is the one the next batch adds to."""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils import clip_grad_norm_

from ...jsontext import dumps
from ...paths import atomic_path
from .editor import RLEditEditor
from .hypernet import HypernetError
from .objective import TrainingExample, train_step

CHECKPOINT_VERSION = 1


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = opt.state_dict()
    tensors = {f"{i}.{k}": v.detach().cpu().contiguous() for i, s in state["state"].items() for k, v in s.items()
               if isinstance(v, torch.Tensor)}
    return tensors, {"param_groups": state["param_groups"], "indices": sorted(state["state"])}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {i: {} for i in meta["indices"]}
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        state[int(i)][name] = value
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class TrainingRun:
    """``TrainingRun(editor, examples, out).run()``; ``resume=True`` continues from ``out``."""

    def __init__(self, editor: RLEditEditor, examples: list[TrainingExample], out: str | Path | None = None,
                 checkpoint_every: int = 1) -> None:
        """``out`` None: no checkpoints (a run that cannot be resumed)."""
        self.editor, self.examples = editor, examples
        self.out = Path(out) if out is not None else None
        self.settings = editor.hypernet.settings
        self.checkpoint_every = checkpoint_every
        self.optimizer = torch.optim.Adam(editor.hypernet.parameters(), lr=self.settings.meta_lr)
        self.step = 0
        self.history: list[dict[str, float]] = []

    @property
    def checkpoint_dir(self) -> Path:
        if self.out is None:
            raise HypernetError("this training run has no output directory for checkpoints")
        return self.out / "checkpoint"

    def steps_total(self) -> int:
        return min(self.settings.n_steps, len(self.examples) // self.settings.batch_size)

    def _batch(self, t: int) -> list[TrainingExample]:
        size = self.settings.batch_size
        return self.examples[t * size : (t + 1) * size]

    # --- checkpoints --------------------------------------------------------------------------
    def save(self) -> None:
        hp = self.editor.hypernet
        opt_tensors, opt_meta = _optimizer_tensors(self.optimizer)
        grads = {name: p.grad.detach().cpu().contiguous() for name, p in hp.named_parameters() if p.grad is not None}
        with atomic_path(self.checkpoint_dir) as tmp:
            tmp.mkdir(parents=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in hp.state_dict().items()}, tmp / "hypernet.safetensors")
            save_file(grads, tmp / "grads.safetensors")
            save_file(opt_tensors, tmp / "optimizer.safetensors")
            save_file({n: a.contiguous().cpu() for n, a in self.editor.deltas.items()}, tmp / "shifts.safetensors")
            (tmp / "progress.json").write_text(dumps({
                "version": CHECKPOINT_VERSION, "step": self.step, "history": self.history, "optimizer": opt_meta,
                "settings": self.settings.model_dump(mode="json")},
                self.checkpoint_dir / "progress.json", indent=2))

    def load(self) -> None:
        d = self.checkpoint_dir
        try:
            progress = json.loads((d / "progress.json").read_text())
        except (OSError, ValueError) as exc:
            raise HypernetError(f"{self.out}: no training checkpoint to resume ({exc})") from None
        if progress.get("version") != CHECKPOINT_VERSION or progress["settings"] != self.settings.model_dump(mode="json"):
            raise HypernetError(f"{self.out}: the checkpoint was written under other settings or another version; "
                                "train into a new --out")
        self.editor.restore()  # first: it puts the editor's baseline normalisers back
        hp = self.editor.hypernet
        hp.load_state_dict(load_file(d / "hypernet.safetensors"))
        grads = load_file(d / "grads.safetensors")
        for name, p in hp.named_parameters():
            p.grad = grads[name].to(p.device) if name in grads else None
        _load_optimizer(self.optimizer, load_file(d / "optimizer.safetensors"), progress["optimizer"])
        self.editor.write({n: a.T for n, a in load_file(d / "shifts.safetensors").items()})
        self.step, self.history = progress["step"], progress["history"]

    # --- the loop -----------------------------------------------------------------------------
    def _clip_and_step(self, update: bool) -> None:
        """After a batch's backward: reference handling clips the accumulated gradient now, in
        place (so a checkpoint holds the clipped sum, as the next batch adds to it); summed
        handling clips the sum once, just before the optimizer step."""
        params = self.editor.hypernet.parameters()
        if self.settings.grad_handling == "reference" or update:
            clip_grad_norm_(params, self.settings.max_grad_norm)
        if update:
            self.optimizer.step()
            self.optimizer.zero_grad()

    def run(self, resume: bool = False, on_step: Callable[[int, int, dict[str, float]], None] | None = None
            ) -> list[dict[str, float]]:
        """Train to the end of the sequence; the model is restored afterwards."""
        if resume:
            self.load()
        total = self.steps_total()
        update_every = self.settings.update_every or total
        # the batches the loss still looks back at, as an uninterrupted run has them here
        window: deque = deque((self._batch(t) for t in range(max(0, self.step - self.settings.back_depth), self.step)),
                              maxlen=self.settings.back_depth)
        try:
            while self.step < total:
                stats = train_step(self.editor, self._batch(self.step), window)
                self.step += 1
                self._clip_and_step(self.step % update_every == 0 or self.step == total)
                self.history.append(stats)
                if self.out is not None and (self.step % self.checkpoint_every == 0 or self.step == total):
                    self.save()
                if on_step is not None:
                    on_step(self.step, total, stats)
        finally:
            self.editor.restore_keeping_normalizers()
        return self.history


def train_hypernetwork(editor: RLEditEditor, examples: list[TrainingExample], out: str | Path | None = None,
                       on_step: Callable[[int, int, dict[str, float]], None] | None = None) -> list[dict[str, float]]:
    """The settings' training sequence over ``examples`` (checkpointed into ``out`` if given)."""
    return TrainingRun(editor, examples, out).run(on_step=on_step)
