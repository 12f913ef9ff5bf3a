"""Models: loading (hub, local, built-in), ModelAdapters, tokenization helpers."""

from .adapters import ADAPTERS, ModelAdapter, UnsupportedModelError, get_adapter, register_adapter
from .builtin import BUILTIN_MODELS, builtin_cache_path, is_cached, pull
from .loading import LoadedModel, load_model, parse_dtype
from .tokens import (
    Batch,
    TokenizationError,
    chat_prompt,
    continuation_ids,
    encode,
    make_batch,
    subject_last_index,
)

__all__ = [
    "ADAPTERS", "BUILTIN_MODELS", "Batch", "LoadedModel", "ModelAdapter", "TokenizationError",
    "UnsupportedModelError", "builtin_cache_path", "chat_prompt", "continuation_ids", "encode",
    "get_adapter", "is_cached", "load_model", "make_batch", "parse_dtype", "pull",
    "register_adapter", "subject_last_index",
]
