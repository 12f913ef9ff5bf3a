"""Cache location and atomic writes shared by every stage."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import platformdirs


def cache_dir() -> Path:
    """``$EDITPROBE_CACHE`` or the user cache dir; created on first use."""
    root = os.environ.get("EDITPROBE_CACHE") or platformdirs.user_cache_dir("editprobe")
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path next to ``target``; on success rename it into place, so a
    reader never sees a half-written file (or directory)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent)) / target.name
    try:
        yield tmp
        if target.is_dir() and tmp.is_dir():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")
