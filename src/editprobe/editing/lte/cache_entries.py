"""Reading and writing cache entries that heal (docs/failures.md, "Caches").

Every cache entry editprobe reads back (C0 statistics, AlphaEdit projectors, target
vectors, RLEdit's cached hypernetwork) is checked on read: a file that cannot be parsed,
a tensor of another shape or dtype, NaN or inf, a missing tensor or metadata field. Such an
entry is :class:`DamagedEntry`: its reader names it in one ``warning:`` line, treats it as
missing, computes it again and replaces it. Writes are atomic; a failed write of an
optional cache (targets, the hypernetwork copy) is a warning, of a required one (C0,
projectors) the one-line ``error: cannot write <file>: <reason>`` of ``atomic_path``.
"""

from __future__ import annotations

import json
import math
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
from safetensors import SafetensorError

from ...errors import EditprobeWarning, OutputError, one_line

# What reading a safetensors file raises when it is truncated, empty or not one at all.
UNREADABLE = (SafetensorError, OSError, ValueError)


class DamagedEntry(Exception):
    """A cache entry that exists but cannot be used; ``str()`` is the reason, ``path`` the
    file at fault (set by :func:`blame` where the raiser does not know it)."""

    def __init__(self, reason: str, path: Path | None = None) -> None:
        super().__init__(reason)
        self.path = path


@contextmanager
def blame(path: Path) -> Iterator[None]:
    """DamagedEntry raised inside names ``path`` unless it names a file already."""
    try:
        yield
    except DamagedEntry as exc:
        if exc.path is None:
            exc.path = path
        raise


class CacheEntryWarning(EditprobeWarning):
    """A damaged cache entry (recomputed), or an optional cache entry that could not be written."""


def warn_damaged(path: str | Path, reason: object, action: str = "computing it again") -> None:
    warnings.warn(CacheEntryWarning(f"{path}: damaged cache entry ({one_line(reason)}); {action}"), stacklevel=3)


def warn_unwritten(error: OutputError, consequence: str) -> None:
    """An optional cache's failed write: ``error`` names the file and the reason."""
    warnings.warn(CacheEntryWarning(f"{error}; {consequence}"), stacklevel=3)


def read_meta(path: Path) -> dict:
    """A cache entry's JSON metadata (an object), or DamagedEntry."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise DamagedEntry(f"unreadable: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DamagedEntry(f"corrupt JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DamagedEntry("its JSON is not an object")
    return value


def load_tensors(path: Path, device: str = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors of a safetensors file and its header metadata, or DamagedEntry."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            return {name: f.get_tensor(name) for name in f.keys()}, dict(f.metadata() or {})
    except UNREADABLE as exc:
        raise DamagedEntry(f"unreadable: {exc}") from None


def tensor_header(path: Path) -> dict[str, tuple[list[int], str]]:
    """{name: (shape, dtype)} from a safetensors header, without reading the data (a
    truncated file fails here too: the header must cover the file), or DamagedEntry."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {name: (list(f.get_slice(name).get_shape()), f.get_slice(name).get_dtype()) for name in f.keys()}
    except UNREADABLE as exc:
        raise DamagedEntry(f"unreadable: {exc}") from None


def expect_names(tensors: dict, names: set[str]) -> None:
    if set(tensors) != names:
        raise DamagedEntry(f"holds tensors {sorted(tensors)}, expected {sorted(names)}")


def check_tensor(name: str, t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None = None) -> None:
    """``t`` has ``shape`` (and ``dtype``) and holds no NaN or inf, else DamagedEntry."""
    if tuple(t.shape) != tuple(shape):
        raise DamagedEntry(f"{name} has shape {list(t.shape)}, expected {list(shape)}")
    if dtype is not None and t.dtype != dtype:
        raise DamagedEntry(f"{name} is {str(t.dtype).removeprefix('torch.')}, "
                           f"expected {str(dtype).removeprefix('torch.')}")
    if not t.is_floating_point():
        raise DamagedEntry(f"{name} is not a floating-point tensor")
    if not bool(torch.isfinite(t).all()):
        raise DamagedEntry(f"{name} holds NaN or inf")


def expect_int(meta: dict, field: str, minimum: int) -> int:
    value = meta.get(field)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise DamagedEntry(f"metadata field {field!r} is {value!r}, expected an integer >= {minimum}")
    return value


def expect_number(meta: dict, field: str) -> float:
    value = meta.get(field)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise DamagedEntry(f"metadata field {field!r} is {value!r}, expected a finite number")
    return float(value)
