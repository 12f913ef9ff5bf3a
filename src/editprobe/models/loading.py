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
    """``"bf16"`` -> ``torch.bfloat16`` (the names :func:`load_model` takes); a dtype or None as is.

    Raises:
        OptionError: an unknown name.
    """
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

    The model comes back in eval mode with gradients off; the tokenizer pads on the right
    (its pad token is the EOS token when it has none), as editing writes targets at
    right-padded positions.

    Args:
        name_or_path: A built-in name (``smollm2-135m``: downloaded and cached on first
            use, then offline), a local directory (``./x``, ``/x``, ``~/x`` or an existing
            directory; a missing one is an error, never a hub lookup) or a hub id (offline
            when it is in the local Hugging Face cache, else looked up once with a short
            timeout).
        dtype: The weights' dtype: ``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``,
            ``"bfloat16"``/``"bf16"``, ``"float64"`` or a ``torch.dtype``. None: the
            checkpoint's own dtype (``transformers``' default).
        device: Where to move the whole model after loading (``"cpu"``, ``"cuda"``,
            ``"cuda:1"``, ``"mps"``). Checked before loading: a device this machine lacks
            fails at once. None: where ``transformers`` loads it (the CPU, unless
            ``device_map`` says otherwise). Ignored for the move when ``device_map`` is given.
        device_map: Passed to ``from_pretrained`` to place or shard the layers
            (``"auto"`` spreads a large model over the visible GPUs; needs ``accelerate``).
            None: no map.
        trust_remote_code: Run the checkpoint's own modelling code (``transformers``'
            flag of the same name). Off unless you ask for it.

    Returns:
        The model, its tokenizer, the ``ModelAdapter`` of its architecture and the name it
        was loaded by; it unpacks as ``model, tokenizer, adapter``.

    Raises:
        OptionError: ``dtype`` is not one of the names above.
        DeviceError: ``device`` is not a device, is not available here, or the model does
            not fit on it.
        ModelReferenceError: ``name_or_path`` names no built-in, directory or hub model,
            or ``transformers`` cannot load it.
        UnsupportedModelError: the architecture has no ``ModelAdapter``
            (docs/howto/add-adapter.md).

    Examples:
        A model saved with ``save_pretrained`` (here a tiny random Llama), loaded from its
        directory in bfloat16 on the CPU:

        >>> from editprobe.models import load_model
        >>> from editprobe.models.tiny import tiny_model
        >>> tiny = tiny_model("llama")
        >>> tiny.model.save_pretrained("tiny-llama")
        >>> tiny.tokenizer.save_pretrained("tiny-llama")  # doctest: +ELLIPSIS
        (...)
        >>> model, tokenizer, adapter = load_model("./tiny-llama", dtype="bf16", device="cpu")
        >>> model.dtype, adapter.model_type, tokenizer.padding_side
        (torch.bfloat16, 'llama', 'right')

        The built-in model (downloaded once, about 270 MB), or a hub model placed over
        the GPUs, as not-run snippets:

        ```python
        model, tokenizer, adapter = load_model("smollm2-135m")
        model, tokenizer, adapter = load_model("meta-llama/Meta-Llama-3-8B-Instruct",
                                               dtype="bf16", device_map="auto")
        ```
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
