"""Cache location and atomic writes shared by every stage."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from .errors import OutputError, UserError
from .jsontext import dumps


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


# Temporary and set-aside names beside a target: ``.NAME.tmp-XXXX/NAME`` is the new file or
# directory being written (complete once the swap starts), ``.NAME.old`` the one it
# replaces, between the two renames of a swap. recover_swaps() reads them after a kill.
TMP_INFIX = ".tmp-"
OLD_SUFFIX = ".old"


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file, read in 16 MiB chunks (weights files are gigabytes)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


@contextmanager
def atomic_path(target: str | Path):
    """Yield a temporary path next to ``target``; on success rename it into place, so a
    reader never sees a half-written file (or directory). A directory that already exists
    is replaced by rename-aside: the old one is renamed to ``.NAME.old``, the new one into
    place, then the old one removed, so at every moment one complete version exists on
    disk (:func:`recover_swaps` completes a swap a kill interrupted). A failed write (disk
    full, read-only, permission) leaves nothing behind and raises :class:`OutputError`
    naming ``target``."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_INFIX}", dir=target.parent)) / target.name
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {_reason(exc)}") from None
    try:
        try:
            yield tmp
            move_into_place(tmp, target)
        except UserError:
            raise
        except Exception as exc:
            reason = write_failure_reason(exc)
            if reason is None:  # not a failed write: a bug
                raise
            raise OutputError(f"cannot write {target}: {reason}", reason) from None
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def move_into_place(new: str | Path, target: str | Path) -> None:
    """Rename the complete ``new`` (a file, or a directory) to ``target``: a file by one
    atomic rename, an existing directory by rename-aside (:func:`atomic_path`)."""
    new, target = Path(new), Path(target)
    if target.is_dir() and new.is_dir():
        _swap_directory(new, target)
    else:
        os.replace(new, target)


def _swap_directory(new: Path, target: Path) -> None:
    aside = target.with_name(f".{target.name}{OLD_SUFFIX}")
    if aside.exists():  # left by an earlier swap that was killed after its second rename
        shutil.rmtree(aside)
    _set_aside(target, aside)
    os.rename(new, target)
    shutil.rmtree(aside, ignore_errors=True)


def _set_aside(target: Path, aside: Path) -> None:
    """The first rename of a swap (its own function: the kill tests stop a process here)."""
    os.rename(target, aside)


def recover_swaps(directory: str | Path, descend: Callable[[Path], bool] | None = lambda path: True) -> list[str]:
    """Complete or roll back what a killed write left in ``directory`` (and in the
    subdirectories ``descend`` accepts; None: none); returns the names it repaired. A ``.NAME.old`` whose NAME is
    missing was killed between the two renames of a swap: the new version, complete, waits
    in ``.NAME.tmp-*`` and is moved into place (rolled back to the old one when it is not
    there). Any other ``.NAME.tmp-*`` was still being written and is removed. Only call it
    on a directory this process holds the lock of: another process's temporaries are
    indistinguishable from a dead one's."""
    directory = Path(directory)
    repaired: list[str] = []
    if not directory.is_dir():
        return repaired
    entries = sorted(p.name for p in directory.iterdir())
    for name in entries:
        if not (name.startswith(".") and name.endswith(OLD_SUFFIX)) or TMP_INFIX in name:
            continue
        stem = name[1:-len(OLD_SUFFIX)]
        target, aside = directory / stem, directory / name
        if not target.exists():
            staged = [directory / t / stem for t in entries
                      if t.startswith(f".{stem}{TMP_INFIX}") and (directory / t / stem).exists()]
            os.rename(staged[0] if len(staged) == 1 else aside, target)
            repaired.append(stem)
        if aside.exists():
            shutil.rmtree(aside)
    for name in entries:
        path = directory / name
        if name.startswith(".") and TMP_INFIX in name and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    if descend is not None:
        for path in sorted(directory.iterdir()):
            if path.is_dir() and not path.is_symlink() and not path.name.startswith(".") and descend(path):
                repaired += [f"{path.name}/{r}" for r in recover_swaps(path, descend)]
    return repaired


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


# safetensors (Rust) reports a failed write as SafetensorError("Error while serializing: I/O
# error: File too large (os error 27)"), not as an OSError: the errno is only in the text.
_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


def write_failure_reason(exc: BaseException) -> str | None:
    """The plain cause ("No space left on device", "File too large") when ``exc`` is a
    failed write: an OSError (Python's own writes, matplotlib's savefig) or safetensors'
    SafetensorError around an I/O error; None for anything else (a bug)."""
    if isinstance(exc, OSError):
        return _reason(exc)
    if type(exc).__name__ == "SafetensorError" and "I/O error" in str(exc):
        code = _OS_ERROR_CODE.search(str(exc))
        return os.strerror(int(code.group(1))) if code else str(exc).split("I/O error:", 1)[1].strip()
    return None


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
    write_text_atomic(path, dumps(obj, path, indent=2, ensure_ascii=False) + "\n")
