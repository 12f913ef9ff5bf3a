"""``load_model``: a hub id, a local directory or a built-in name -> model, tokenizer, adapter."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .adapters import ModelAdapter, get_adapter
from ..errors import DeviceError, ModelReferenceError, OptionError, one_line
from .builtin import pull
from .progress import quiet_progress
from .reference import resolve_model_reference

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
        raise OptionError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}") from None


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


def check_device(device: str | torch.device | None) -> torch.device | None:
    """The device, or one clear error when this machine has no such device."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"--device {device!r}: not a device; use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else "no GPU visible"
            raise DeviceError(f"--device {device!r}: CUDA is not available here (torch {torch.__version__}, {build}); "
                              "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {device!r}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps", "xpu"):
        raise DeviceError(f"--device {device!r}: unsupported device type; use cpu, cuda, cuda:N or mps")
    return dev


def resolve_source(name_or_path: str) -> tuple[str | Path, bool]:
    """Where ``load_model`` reads from, and whether it reads offline (see models/reference.py)."""
    ref = resolve_model_reference(name_or_path)
    if ref.kind == "builtin":
        return pull(name_or_path), True  # pull is a no-op once cached
    if ref.kind == "local":
        return Path(name_or_path).expanduser(), True
    return name_or_path, ref.offline


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
    check_device(device)
    try:
        with quiet_progress():
            tok = AutoTokenizer.from_pretrained(str(source), **kwargs)
            model = AutoModelForCausalLM.from_pretrained(str(source), **model_kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelReferenceError(f"model {name_or_path!r}: cannot load: {one_line(exc)}") from None
    if device is not None and device_map is None:
        try:
            model.to(device)
        except (RuntimeError, torch.OutOfMemoryError) as exc:
            raise DeviceError(f"--device {device!r}: cannot move the model there: {one_line(exc)}") from None
    model.eval()
    model.requires_grad_(False)
    prepare_tokenizer(tok)
    return LoadedModel(model, tok, get_adapter(model), str(name_or_path))
