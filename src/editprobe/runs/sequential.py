"""Sequential batch editing: the one loop shared by ``edit``, ``run`` and grids of runs.

Edits accumulate across batches. Every batch is seeded from (seed, stage, batch), so a
resumed job that starts at batch k equals an uninterrupted one.
"""

from __future__ import annotations

import random
import time
import zlib
from collections.abc import Callable, Sequence

import torch

from ..editing.lte.solvers import NumericalError
from ..errors import EditFailedError, one_line

# (batch index, the editor's report, seconds) after each batch
OnBatch = Callable[[int, object, float], None]


def batch_seed(seed: int, stage: str, batch: int) -> int:
    """A stable seed per batch (crc32, not hash(): that one is salted per process)."""
    return zlib.crc32(f"{seed}:{stage}:{batch}".encode())


def n_batches(n_requests: int, batch_size: int) -> int:
    return (n_requests + batch_size - 1) // batch_size


def edit_sequentially(editor, requests: Sequence, batch_size: int, *, seed: int, stage: str, start: int = 0,
                      on_batch: OnBatch | None = None) -> None:
    """Apply ``requests`` in batches of ``batch_size`` from batch ``start`` on. A batch that
    fails numerically is rolled back by the editor and ends the job with one line naming it
    (batches before it stay applied; a checkpointing caller has them saved)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    total = n_batches(len(requests), batch_size)
    for b in range(start, total):
        torch.manual_seed(batch_seed(seed, stage, b))
        random.seed(batch_seed(seed, stage, b))
        batch = list(requests[b * batch_size:(b + 1) * batch_size])
        t = time.perf_counter()
        try:
            report = editor.apply(batch)
        except (FloatingPointError, NumericalError) as exc:
            first, last = b * batch_size + 1, b * batch_size + len(batch)
            raise EditFailedError(f"{stage}: batch {b + 1} of {total} (requests {first}-{last}) failed and was "
                                  f"rolled back: {one_line(exc)}; try other hyperparameters (--set)") from exc
        if on_batch is not None:
            on_batch(b, report, time.perf_counter() - t)
