"""Scoped forward hooks: every pass that reads or changes hidden states goes through here.

Hooks are removed on exit, even on error. Modules may return a tensor (recent HF decoder
layers) or a tuple whose first element is the hidden state; both are handled, and a
module's input is read through ``with_kwargs`` so keyword-only inputs are seen too.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch
from torch import nn


class StopForward(Exception):
    """Raised by a hook to end a forward pass once everything needed was captured."""


def first_tensor(value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    raise TypeError(f"cannot find a hidden-state tensor in a {type(value).__name__}")


def replace_first(value, new: torch.Tensor):
    if isinstance(value, torch.Tensor):
        return new
    return (new, *value[1:]) if isinstance(value, tuple) else [new, *value[1:]]


def _module_input(args, kwargs) -> torch.Tensor:
    if args:
        return first_tensor(args)
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    for v in kwargs.values():
        if isinstance(v, torch.Tensor):
            return v
    raise TypeError("module was called without a tensor input")


@contextmanager
def capture(
    model: nn.Module,
    paths: list[str],
    what: str = "output",
    stop_after: str | None = None,
    detach: bool = True,
) -> Iterator[dict[str, torch.Tensor]]:
    """Record the input or output hidden state of the modules at ``paths``.

    The dict yielded is filled during the forward pass. With ``stop_after`` set, the pass
    raises StopForward right after that module ran; call the model inside
    :func:`run_until_stop` (or catch StopForward) to truncate it there.
    """
    if what not in ("input", "output"):
        raise ValueError("what must be 'input' or 'output'")
    store: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(path: str, record: bool):
        def hook(module, args, kwargs, output):
            if record:
                value = _module_input(args, kwargs) if what == "input" else first_tensor(output)
                store[path] = value.detach() if detach else value
            if path == stop_after:
                raise StopForward

        return hook

    try:
        for path in dict.fromkeys(paths):
            handles.append(model.get_submodule(path).register_forward_hook(make_hook(path, True), with_kwargs=True))
        if stop_after is not None and stop_after not in paths:
            # Only stops: the dict holds exactly what was asked for.
            stop_hook = make_hook(stop_after, False)
            handles.append(model.get_submodule(stop_after).register_forward_hook(stop_hook, with_kwargs=True))
        yield store
    finally:
        for h in handles:
            h.remove()


def run_until_stop(fn: Callable[[], object]) -> None:
    try:
        fn()
    except StopForward:
        pass


@contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace ``module``'s hidden-state output by ``fn(output)`` while the context is open."""

    def hook(mod, args, output):
        return replace_first(output, fn(first_tensor(output)))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def edit_input(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace ``module``'s hidden-state input by ``fn(input)`` while the context is open:
    the first positional argument, or ``hidden_states`` when it is passed by keyword."""

    def pre_hook(mod, args, kwargs):
        if args:
            return (fn(args[0]), *args[1:]), kwargs
        if "hidden_states" in kwargs:
            return args, {**kwargs, "hidden_states": fn(kwargs["hidden_states"])}
        raise TypeError(f"{type(mod).__name__} was called without a positional or hidden_states input")

    handle = module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Within the context no parameter of ``model`` records gradients (an editor's free
    variables are separate leaves); the flags are restored after. A model built with
    ``from_config`` trains by default, and its gradients would tie every step's graph to the
    weights."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
