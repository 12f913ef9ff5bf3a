"""Which positions of a forward pass are decoding steps: what an editor that acts on "the
last token of the input" (GRACE, docs/grace.md) needs to know about passes that hold more
than a prompt.

When a model answers, it reads the prompt in one pass and then predicts one token at a time:
each step's input is the last token so far. A teacher-forced pass over prompt + continuation
(how the probes score, probes/scoring.py) holds both at once; its positions from the
prompt's last token on are each the last token of one such step, the positions before are
prompt read at once. A pass that declares nothing is a prompt alone (or a decoding step, one
token): its last real token is the only step.

The probes declare it with :func:`decoding_from` around such passes; an editor's hook reads
:func:`declared_decoding_start`. Nothing else changes for a model without such a hook.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_START: ContextVar[torch.Tensor | int | None] = ContextVar("editprobe_decoding_start", default=None)


@contextmanager
def decoding_from(first: Sequence[int] | int) -> Iterator[None]:
    """In the forward passes inside, row r's positions from ``first[r]`` on (an int: the
    same for every row) are decoding steps; ``first`` past a row's end: none is."""
    token = _START.set(first if isinstance(first, int) else torch.as_tensor(list(first), dtype=torch.long))
    try:
        yield
    finally:
        _START.reset(token)


def declared_decoding_start() -> torch.Tensor | int | None:
    """What the innermost :func:`decoding_from` declared, or None."""
    return _START.get()


def decoding_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """(rows, width) booleans: the positions of this pass that are decoding steps — from the
    declared start on, or (nothing declared) each row's last real token. The mask may also
    cover cached positions before this pass's tokens (its last ``width`` columns are this
    pass's)."""
    rows, width = input_ids.shape[:2]
    device = input_ids.device
    start = declared_decoding_start()
    columns = torch.arange(width, device=device)
    if start is not None:
        start = torch.as_tensor(start, device=device).reshape(-1, 1)
        return (columns[None, :] >= start).expand(rows, width)
    if attention_mask is None:
        real = torch.ones(rows, width, dtype=torch.bool, device=device)
    else:
        real = attention_mask[:, -width:].to(device=device, dtype=torch.bool)
    last = torch.where(real, columns[None, :], torch.full_like(columns[None, :], -1)).max(1).values
    return columns[None, :] == last[:, None]
