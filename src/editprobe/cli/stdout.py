"""Standard output is an output location too: a full disk, a file over the size limit or a
closed pipe behind it ends in one ``error: cannot write to standard output: <reason>`` line
(exit 2), not in a bug's line."""

from __future__ import annotations

import os
import sys
from contextlib import contextmanager

from ..errors import OutputError


class StdoutError(OutputError):
    """Standard output cannot be written."""


class _GuardedStream:
    """``sys.stdout`` whose failed writes raise :class:`StdoutError`; everything else (isatty,
    encoding, fileno ...) is the stream's own, so rich and click treat it as before."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            raise self._failed(exc) from None

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def _failed(self, exc: OSError) -> StdoutError:
        reason = exc.strerror or type(exc).__name__
        return StdoutError(f"cannot write to standard output: {reason}", reason)


def _quiet_if_broken(stream) -> None:
    """What could not be written stays buffered, and the interpreter's flush at exit would
    fail again with a second message: a stdout that cannot be flushed goes to /dev/null."""
    try:
        stream.flush()
    except OSError:
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, stream.fileno())
            os.close(devnull)
        except (OSError, ValueError, AttributeError):
            pass  # not a file descriptor (a test's captured stream): nothing is flushed at exit


@contextmanager
def guarded_stdout():
    """``sys.stdout`` guarded for the duration of one command."""
    original = sys.stdout
    sys.stdout = _GuardedStream(original)
    try:
        yield
    finally:
        sys.stdout = original
        _quiet_if_broken(original)
