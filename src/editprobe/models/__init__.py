"""Models: loading (hub, local, built-in), ModelAdapters, tokenization helpers."""

from .adapters import ADAPTERS, ModelAdapter, UnsupportedModelError, get_adapter, register_adapter
from .builtin import BUILTIN_MODELS, BuiltinModelError, builtin_cache_path, is_cached, pull
from .loading import LoadedModel, load_model, parse_dtype
from .tokens import (
    Batch,
    TokenizationError,
    char_span_of_subject,
    chat_prompt,
    chat_subject_text,
    continuation_ids,
    encode,
    encode_plain,
    join_target,
    make_batch,
    subject_last_index,
)

__all__ = [
    "ADAPTERS", "BUILTIN_MODELS", "Batch", "BuiltinModelError", "LoadedModel", "ModelAdapter",
    "TokenizationError", "UnsupportedModelError", "builtin_cache_path", "char_span_of_subject",
    "chat_prompt", "chat_subject_text", "continuation_ids", "encode", "encode_plain", "get_adapter",
    "is_cached", "join_target", "load_model", "make_batch", "parse_dtype", "pull", "register_adapter",
    "subject_last_index",
]
