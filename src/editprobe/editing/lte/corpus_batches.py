"""The token batches C0 is computed from: documents read, tokenized and grouped by length.

Kept apart from the accumulation so that `benchmarks/c0.py` times a bare forward pass over
exactly the batches the statistic sees.
"""

from __future__ import annotations

from itertools import islice
from typing import Iterable, Iterator

from ...models.tokens import Batch, make_batch

__all__ = ["BATCH_ROWS", "BATCH_TOKENS", "POOL_DOCS", "DocumentBatches", "length_batches"]

# Defaults of every C0 pass. The pool bounds memory for streamed corpora; token ids are
# small, so it is large enough that sorting leaves little padding (SmolLM2's 1000 built-in
# documents: 3% padded tokens in one pool of all, 6% in pools of 512).
BATCH_ROWS, BATCH_TOKENS, POOL_DOCS = 32, 16384, 2048


def length_batches(lengths: list[int], batch_size: int, max_batch_tokens: int) -> Iterator[list[int]]:
    """Indices grouped longest first, so rows of a batch have similar lengths (little
    padding) and the largest batch runs first (an out-of-memory error shows at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) + 1 > batch_size or (len(batch) + 1) * width > max_batch_tokens):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


class DocumentBatches:
    """Right-padded batches of up to ``n_docs`` non-blank documents, each cut at ``max_len``
    tokens; every pool of ``pool_docs`` documents is sorted by length before it is split
    into batches of at most ``batch_size`` rows and ``max_batch_tokens`` padded tokens.

    Iterate once; ``docs_read`` counts the documents read so far (a document that
    tokenizes to nothing is read but gives no row).
    """

    def __init__(self, tokenizer, texts: Iterable[str], *, n_docs: int | None, max_len: int, batch_size: int = BATCH_ROWS,
                 max_batch_tokens: int = BATCH_TOKENS, pool_docs: int = POOL_DOCS) -> None:
        self.tokenizer = tokenizer
        docs = (t for t in texts if t and not t.isspace())
        self._docs = islice(docs, n_docs) if n_docs is not None else docs
        self.max_len, self.batch_size, self.max_batch_tokens, self.pool_docs = max_len, batch_size, max_batch_tokens, pool_docs
        self.docs_read = 0

    def __iter__(self) -> Iterator[Batch]:
        while pool := list(islice(self._docs, self.pool_docs)):
            encoded = self.tokenizer(pool, add_special_tokens=True, truncation=True, max_length=self.max_len)["input_ids"]
            encoded = [ids for ids in encoded if ids]
            self.docs_read += len(pool)
            for rows in length_batches([len(ids) for ids in encoded], self.batch_size, self.max_batch_tokens):
                yield make_batch(self.tokenizer, [encoded[i] for i in rows], "right")
