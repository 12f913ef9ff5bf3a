"""Exclusive locks between editprobe processes: one per job directory for the life of the
process, one per cache entry while it is computed.

A lock is ``flock`` on a lock file that also records its holder (PID, host, start time,
command), so a refused process can name who holds it and ``study --status`` can tell a live
run from a dead one: the kernel releases a flock when its process dies, however it dies, so
a lock file left behind by a killed process is free. On NFS, ``flock`` holds only where the
server supports it (NFSv4 or lockd); two hosts writing one directory over a filesystem
without it are not protected (docs/failures.md).
"""

from __future__ import annotations

import datetime as dt
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import OutputError, UserError


class LockHeldError(UserError):
    """Another editprobe process holds the lock: its line names the holder."""


@dataclass(frozen=True)
class Holder:
    pid: int | None = None
    host: str | None = None
    started: str | None = None
    command: str | None = None

    def describe(self) -> str:
        if self.pid is None:
            return "another process (its lock file names no holder yet)"
        since = f" since {self.started}" if self.started else ""
        return f"pid {self.pid} on {self.host or 'an unknown host'}{since}"


def _holder_record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
            "command": " ".join(["editprobe", *sys.argv[1:]])[:300]}


def read_holder(path: str | Path) -> Holder:
    """Who the lock file says holds it (fields None when it is empty or unreadable)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return Holder()
    if not isinstance(raw, dict):
        return Holder()
    pid = raw.get("pid")
    return Holder(pid=pid if isinstance(pid, int) else None, host=raw.get("host"), started=raw.get("started"),
                  command=raw.get("command"))


class FileLock:
    """``with FileLock(path, what):`` holds an exclusive flock on ``path`` (created if needed).

    Non-blocking by default: a held lock raises :class:`LockHeldError` at once, naming
    ``what`` and the holder. ``blocking=True`` waits (for cache entries: the other process is
    computing what this one needs), calling ``on_wait(holder)`` once before it waits.
    ``remove=True`` deletes the lock file on release (for a lock beside a user's file).
    """

    def __init__(self, path: str | Path, what: str, *, blocking: bool = False,
                 on_wait: Callable[[Holder], None] | None = None, remove: bool = False) -> None:
        self.path = Path(path)
        self.what = what
        self.blocking = blocking
        self.on_wait = on_wait
        self.remove = remove
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FileLock":
        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        waited = False
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not self.blocking:
                    holder = read_holder(self.path)
                    os.close(fd)
                    raise LockHeldError(f"{self.what}: in use by another editprobe process ({holder.describe()}); "
                                        "wait for it to finish or stop it, or choose another location") from None
                if not waited and self.on_wait is not None:
                    self.on_wait(read_holder(self.path))
                waited = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if self._still_the_file(fd):
                break
            # The holder removed the file (remove=True) between our open and our lock: the
            # lock we got is on an unlinked file, which nobody else will ever see.
            os.close(fd)
        self._fd = fd
        self._write_holder()
        return self

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise OutputError(f"{self.what}: cannot create its lock file {self.path}: "
                              f"{exc.strerror or type(exc).__name__}") from None

    def _still_the_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _write_holder(self) -> None:
        assert self._fd is not None
        data = json.dumps(_holder_record()).encode()
        try:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)
        except OSError as exc:  # a full disk must not stop a job that holds its lock
            if exc.errno not in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                raise

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self.remove:
                self.path.unlink(missing_ok=True)
            else:
                os.ftruncate(fd, 0)  # the file stays; it names nobody now
        except OSError:
            pass
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc_info) -> None:
        self.release()


def lock_holder(path: str | Path) -> Holder | None:
    """The holder of the lock at ``path`` while a process holds it; None when it is free
    (or there is no lock file). Never blocks."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return read_holder(path)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def wait_note(what: str) -> Callable[[Holder], None]:
    """An ``on_wait`` that prints one plain line to stderr (a cache entry another process
    is computing: this one waits for it rather than computing it again)."""
    def note(holder: Holder) -> None:
        sys.stderr.write(f"waiting for {what}: another editprobe process is computing it ({holder.describe()})\n")
        sys.stderr.flush()

    return note
