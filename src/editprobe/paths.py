"""Cache location and atomic writes shared by every stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from .errors import OutputError, UserError


def cache_dir() -> Path:
    """``$EDITPROBE_CACHE`` or the user cache dir; created on first use."""
    root = os.environ.get("EDITPROBE_CACHE") or platformdirs.user_cache_dir("editprobe")
    path = Path(root).expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        where = "EDITPROBE_CACHE" if os.environ.get("EDITPROBE_CACHE") else "the user cache directory"
        raise OutputError(f"cache directory {path} ({where}): cannot create it: {_reason(exc)}") from None
    return path


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path next to ``target``; on success rename it into place, so a
    reader never sees a half-written file (or directory). A failed write (disk full,
    read-only, permission) leaves nothing behind and raises :class:`OutputError` naming
    ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from None
    try:
        try:
            yield tmp
            if target.is_dir() and tmp.is_dir():
                shutil.rmtree(target)
            os.replace(tmp, target)
        except UserError:
            raise
        except OSError as exc:
            raise OutputError(f"cannot write {target}: {_reason(exc)}", _reason(exc)) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def check_writable(path: str | Path, option: str = "--out") -> None:
    """Fail now, before any work, when ``path`` could not be created or written later: it is
    a file, or its nearest existing ancestor is not a directory we can create entries in.
    The check creates and removes one empty directory (permission bits say nothing for root,
    nor for read-only mounts)."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{option} {path}: is a file, not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(f"{option} {path}: {ancestor} is a file, so the directory cannot be created")
    try:
        probe = tempfile.mkdtemp(prefix=".editprobe-write-check.", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputError(f"{option} {path}: cannot write under {ancestor}: {_reason(exc)}") from None


def read_json_object(path: str | Path) -> dict:
    """A JSON file that must hold an object; ValueError (with the reason) otherwise."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(" ".join(str(exc).split())) from None
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
