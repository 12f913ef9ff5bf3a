"""How a corpus picks the documents C0 reads (``mom2_sample``, docs/covariance.md).

- ``first``: the first N documents, in the corpus's order (a Wikipedia dump's order is page
  id: its oldest articles).
- ``random``: a seeded random sample. Local files draw it exactly (below); a streamed Hugging
  Face dataset shuffles its shards, split per parquet row group, and draws through a buffer.
- ``uniform``: the reference's procedure on a Hugging Face dataset: the whole split on disk,
  a seeded permutation of every row index, its first N. Local files: the same as ``random``.

The references (MEMIT, AlphaEdit, the paper's FE) draw their 100,000 articles with
``random_sample=1``: Python's ``random.Random(1)`` shuffles the list of all row indices and
the first N are read. ``permutation_prefix`` is that draw.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Iterator

SAMPLE_MODES = ("first", "random", "uniform")
DEFAULT_SAMPLE_SEED = 1  # the references' random_sample=1
# Streamed `random`: documents held in the shuffle buffer (memory: ~10k Wikipedia articles,
# tens of MB). Part of the corpus identity: another buffer draws other documents.
SHUFFLE_BUFFER = 10_000
# The spec named without a mode gets this one; every other corpus reads its first N.
DEFAULT_SAMPLE = {"wikipedia": "random"}


def permutation_prefix(total: int, n: int | None, seed: int) -> list[int]:
    """The first ``n`` (all when None) of a ``random.Random(seed)`` shuffle of ``range(total)``."""
    order = list(range(total))
    random.Random(seed).shuffle(order)
    return order if n is None else order[:n]


def sampled_in_file_order(documents: Callable[[], Iterable[str]], n: int | None, seed: int) -> Iterator[str]:
    """The documents a seeded permutation of a local corpus picks, read in file order (two
    passes: count, then read; memory is one integer per document). C0 is a sum over tokens,
    so the order of the documents does not change it."""
    total = sum(1 for _ in documents())
    if n is None or n >= total:
        yield from documents()
        return
    chosen = set(permutation_prefix(total, n, seed))
    yield from (doc for i, doc in enumerate(documents()) if i in chosen)


def describe(sample: str, seed: int) -> dict:
    """The sampling as recorded with the statistics' corpus (``results[].c0``)."""
    return {"sample": sample} if sample == "first" else {"sample": sample, "seed": seed}


def sampling_key(sample: str, seed: int, *, streamed: bool) -> str:
    """What enters a corpus identity besides its content: nothing for ``first`` (caches made
    before sampling existed stay valid), else the mode, the seed and, streamed, the buffer."""
    if sample == "first":
        return ""
    key = f"{sample}:seed={seed}"
    return f"{key}:rowgroups:buffer={SHUFFLE_BUFFER}" if streamed and sample == "random" else key
