"""``load_model``: a hub id, a local directory or a built-in name -> model, tokenizer, adapter."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .adapters import ModelAdapter, get_adapter
from .builtin import BUILTIN_MODELS, BuiltinModelError, pull
from .progress import quiet_progress

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float64": torch.float64,
}


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype.lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: object
    adapter: ModelAdapter
    name: str

    def __iter__(self):  # allows `model, tok, adapter = load_model(...)`
        return iter((self.model, self.tokenizer, self.adapter))


def prepare_tokenizer(tok) -> None:
    """Editing writes targets at right-padded positions; generation code pads left itself."""
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"


def resolve_source(name_or_path: str) -> tuple[str | Path, bool]:
    """Where ``load_model`` reads from, and whether that is local. Paths that are clearly
    meant as paths, and near-misses of built-in names, fail here with a clear message
    instead of as a confusing hub lookup."""
    if name_or_path in BUILTIN_MODELS:
        return pull(name_or_path), True  # pull is a no-op once cached
    source = Path(name_or_path).expanduser()
    if source.is_dir():
        return source, True
    if source.exists():
        raise FileNotFoundError(f"model path {name_or_path!r} is a file; give the model's directory")
    if name_or_path.startswith((".", "/", "~")) or "\\" in name_or_path:
        raise FileNotFoundError(
            f"no model directory at {name_or_path!r} (resolved to {source.resolve()}); give a local "
            f"directory, a hub id such as 'HuggingFaceTB/SmolLM2-135M-Instruct', or a built-in: "
            f"{', '.join(BUILTIN_MODELS)}"
        )
    close = difflib.get_close_matches(name_or_path.lower(), list(BUILTIN_MODELS), n=1, cutoff=0.8)
    if close and "/" not in name_or_path:
        raise BuiltinModelError(
            f"unknown built-in model {name_or_path!r}; did you mean {close[0]!r}? built-ins: {', '.join(BUILTIN_MODELS)}"
        )
    return name_or_path, False  # a hub id


def load_model(
    name_or_path: str,
    dtype: str | torch.dtype | None = None,
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    trust_remote_code: bool = False,
) -> LoadedModel:
    """Load a causal LM with its tokenizer and its ModelAdapter.

    ``name_or_path``: a built-in name (``smollm2-135m``; cached on first use), a local
    directory, or a hub id (needs the network). ``trust_remote_code`` stays off unless the
    caller asks for it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch_dtype = parse_dtype(dtype)  # a bad dtype fails before any loading
    source, local = resolve_source(name_or_path)
    kwargs = dict(trust_remote_code=trust_remote_code, local_files_only=local)
    model_kwargs = dict(kwargs)
    if torch_dtype is not None:
        model_kwargs["dtype"] = torch_dtype
    if device_map is not None:
        model_kwargs["device_map"] = device_map
    with quiet_progress():
        tok = AutoTokenizer.from_pretrained(str(source), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(source), **model_kwargs)
    if device is not None and device_map is None:
        model.to(device)
    model.eval()
    model.requires_grad_(False)
    prepare_tokenizer(tok)
    return LoadedModel(model, tok, get_adapter(model), str(name_or_path))
