"""The one family of expected failures.

A :class:`UserError` is something the user caused and can fix: a bad option, file, record,
model reference, device or output location. ``str(err)`` is one line that names the culprit
and says what to do. The command line prints it as ``error: ...`` and exits with code 2;
any other exception is a bug and exits with code 1 (its traceback behind ``--debug``).
"""

from __future__ import annotations


class UserError(Exception):
    """An expected failure: one line naming the file, record, field or option."""


class OptionError(UserError, ValueError):
    """A command-line option or config field with a value that cannot work."""


class OutputError(UserError, OSError):
    """The output location cannot be written (missing, a file, read-only, disk full).
    ``reason`` is the bare cause (e.g. "No space left on device")."""

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message

    def __str__(self) -> str:
        return str(self.args[0])


class ModelReferenceError(UserError, ValueError):
    """A model reference that names no loadable model: missing path, unknown name, offline hub id."""


class DeviceError(UserError, ValueError):
    """A device that does not exist on this machine."""


class EditFailedError(UserError, ArithmeticError):
    """A batch whose edit failed numerically (NaN, a singular solve); the editor rolled it back."""


class EditprobeWarning(UserWarning):
    """Something suspicious but not wrong; the command line prints it as one ``warning:`` line."""


class CorpusShortfallWarning(EditprobeWarning):
    """A corpus gave fewer documents than asked for (e.g. ``mom2_n_samples`` above its size)."""


LINE_LIMIT = 1000  # characters of an error or warning line
QUOTE_LIMIT = 200  # characters of a user's value quoted in one


def clip(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and ``…(N characters)``, N its length."""
    return text if len(text) <= limit else f"{text[:limit]}…({len(text):,} characters)"


def quoted(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, a long value cut (:func:`clip`): a message echoes
    user input, which can be megabytes."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}…({len(value):,} characters)"
    return clip(repr(value), limit)


def one_line(message: object) -> str:
    """The message on one line: scripts read stderr line by line. Over :data:`LINE_LIMIT`
    characters its middle is cut, with the message's length (the end usually says what to do)."""
    text = str(message)
    size = len(text)
    if size > 4 * LINE_LIMIT:  # collapse only what can be shown
        text = f"{text[:LINE_LIMIT]} {text[-LINE_LIMIT:]}"
    line = " ".join(text.split())
    if size <= 4 * LINE_LIMIT and len(line) <= LINE_LIMIT:
        return line
    head, tail = LINE_LIMIT * 3 // 4, LINE_LIMIT // 5
    return f"{line[:head]}…({size:,} characters)…{line[max(head, len(line) - tail):]}"


def validation_message(exc) -> tuple[str, str]:
    """(where, message) of a pydantic ValidationError's first error, for one error line
    (a long key or message cut: both can quote the user's input)."""
    first = exc.errors(include_input=False, include_url=False)[0]
    where = ".".join(clip(str(x)) for x in first["loc"])
    message = first["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return where, clip(message, LINE_LIMIT // 2)
