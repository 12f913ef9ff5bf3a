"""Quiet model loading: transformers draws a progress bar per tensor ("Loading weights",
"Converting and de-quantizing GGUF tensors", "Writing model shards") on every load, which
buries the output of a run. Only the bars are silenced; warnings and errors still print.
"""

from __future__ import annotations

import functools
from contextlib import contextmanager
from typing import Iterator


@contextmanager
def quiet_progress(gguf: bool = False) -> Iterator[None]:
    """Switch off transformers' progress bars inside the block, restoring them after;
    ``gguf=True`` also silences the GGUF dequantization bar."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    # The GGUF reader calls tqdm.auto directly, outside transformers' switch, so its bar is
    # replaced by a disabled one for the duration (and only if the module has that name).
    gguf_utils = _gguf_module() if gguf else None
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original
        if was_enabled:
            hf_logging.enable_progress_bar()


def _gguf_module():
    try:
        from transformers import modeling_gguf_pytorch_utils
    except ImportError:  # a transformers without GGUF support: nothing to silence
        return None
    return modeling_gguf_pytorch_utils
