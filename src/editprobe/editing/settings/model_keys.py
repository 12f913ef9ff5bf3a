"""Which shipped hyperparameter file belongs to a model: an exact table, never substrings."""

from __future__ import annotations

from ...models.builtin import BUILTIN_MODELS
from .hparams import HParamsError

# hub id -> key of the YAML files under hparams/<method>/
KNOWN_MODELS = {
    "gpt2-xl": "gpt2-xl",
    "openai-community/gpt2-xl": "gpt2-xl",
    "EleutherAI/gpt-j-6B": "gpt-j-6b",
    "EleutherAI/gpt-j-6b": "gpt-j-6b",
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama3-8b-instruct",
    "meta-llama/Llama-3.1-8B-Instruct": "llama3-8b-instruct",
    "Qwen/Qwen2.5-7B-Instruct": "qwen2.5-7b-instruct",
}


def hparams_key(model: str) -> str:
    if model in BUILTIN_MODELS:
        return model
    if model in KNOWN_MODELS:
        return KNOWN_MODELS[model]
    raise HParamsError(
        f"no shipped hyperparameters for {model!r} (known: {', '.join(sorted(KNOWN_MODELS))}); pass --hparams FILE.yaml"
    )
