"""Progress of long work, drawn one way everywhere: rich bars on a terminal, plain lines elsewhere.

A bar redrawn in place means nothing in a log file or a pipe (rich draws nothing there, so
``make demo > log 2>&1`` showed nothing for minutes), so when the console is not a terminal each
step is one line on stderr, with counts and an estimate of the time left (and when only stdout
is redirected, ``make demo > log``, the bar stays on the terminal and the lines go to the log)::

    [counterfact-sample memit positive] editing batch 2/5 (40/100 records) 3m12s elapsed, ETA 4m48s

No carriage returns, no escapes. Every command and the experiment loop draw through
:func:`progress`, so the choice is made in one place: the console's own ``is_terminal``
(rich's answer, which honours ``FORCE_COLOR``/``TTY_COMPATIBLE`` and notebooks).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape

__all__ = ["PlainProgress", "RichProgress", "TeeProgress", "announce", "format_seconds", "is_interactive",
           "progress", "write_line"]


def format_seconds(seconds: float) -> str:
    """``45s``, ``3m12s``, ``1h04m``: short enough for a progress line."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def is_interactive(console: Console) -> bool:
    """Whether ``console`` redraws a bar in place (a terminal or a notebook)."""
    return console.is_terminal or console.is_jupyter


class RichProgress:
    """A rich bar (transient, as the commands always drew it)."""

    def __init__(self, bar, task, console: Console, label: str = "") -> None:
        self._bar, self._task, self.console, self._label = bar, task, console, label

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None,
               advance: int = 0) -> None:
        fields = {k: v for k, v in (("completed", completed), ("total", total)) if v is not None}
        if advance:
            fields["advance"] = advance
        if description is not None:
            fields["description"] = escape(f"{self._label}: {description}" if self._label else description)
        self._bar.update(self._task, **fields)

    def advance(self, steps: int = 1) -> None:
        self._bar.advance(self._task, steps)

    def print(self, text: str) -> None:
        """A line above the bar (it stays when the bar goes)."""
        self._bar.console.print(escape(text), highlight=False)


class PlainProgress:
    """One line per step on ``stream``: ``[label] unit done/total (counts) elapsed, ETA``.

    ``counts(done)`` adds what a step holds (``40/100 records``); ``every_s`` leaves out lines
    closer than that to the last one (never the first or the last step); ``listener`` gets each
    line too (a study records its run's latest line for ``--status`` and the Ray driver)."""

    def __init__(self, label: str, description: str, total: int | None, completed: int, *, unit: str = "",
                 counts: Callable[[int], str] | None = None, every_s: float = 0.0, stream=None,
                 console: Console | None = None, clock: Callable[[], float] = time.monotonic,
                 listener: Callable[[str], None] | None = None) -> None:
        self.label, self.description, self.total, self.completed = label, description, total, completed
        self.unit, self.counts, self.every_s, self.listener = unit, counts, every_s, listener
        self._stream, self.console, self._clock = stream, console, clock
        self._start = clock()
        self._start_done = completed  # steps done before this process (a resumed stage)
        self._last_line: float | None = None
        if total is not None:  # the work's size is known: say it began (else: at the first step)
            self._line(force=True)

    def update(self, completed: int | None = None, total: int | None = None, description: str | None = None,
               advance: int = 0) -> None:
        changed = description is not None and description != self.description
        if description is not None:
            self.description = description
        if total is not None:
            self.total = total
        if advance:
            completed = (self.completed if completed is None else completed) + advance
        moved = completed is not None and completed != self.completed
        if completed is not None:
            self.completed = completed
        if moved or changed or total is not None:
            self._line(force=changed)

    def advance(self, steps: int = 1) -> None:
        self.completed += steps
        self._line()

    def finish(self) -> None:
        """The last line, where the total was not known in advance."""
        self._line(force=True)

    def print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(escape(text), highlight=False, soft_wrap=True)
        else:
            self._write(text)

    def line(self) -> str:
        """The line for the current state."""
        elapsed = self._clock() - self._start
        head = " ".join(p for p in (f"[{self.label}]" if self.label else "", self.description, self.unit) if p)
        done = f"{self.completed}/{self.total}" if self.total is not None else f"{self.completed}"
        parts = [f"{head} {done}"]
        if self.counts is not None:
            parts.append(f"({self.counts(self.completed)})")
        parts.append(f"{format_seconds(elapsed)} elapsed")
        line = " ".join(parts)
        eta = self._eta(elapsed)
        return line + (f", ETA {format_seconds(eta)}" if eta is not None else "")

    def _eta(self, elapsed: float) -> float | None:
        done_here = self.completed - self._start_done
        if self.total is None or done_here <= 0 or elapsed <= 0:
            return None
        return max(0.0, (self.total - self.completed) * elapsed / done_here)

    def _line(self, force: bool = False) -> None:
        now = self._clock()
        last = self.total is not None and self.completed >= self.total
        if not (force or last or self._last_line is None or now - self._last_line >= self.every_s):
            return
        self._last_line = now
        line = self.line()
        self._write(line)
        if self.listener is not None:
            self.listener(line)

    def _write(self, text: str) -> None:
        write_line(self._stream or sys.stderr, text)  # stderr looked up late: a test's captured stderr


def write_line(stream, text: str) -> None:
    """``text`` as one line on ``stream``: no carriage return or newline inside, flushed."""
    stream.write(text.replace("\r", " ").replace("\n", " ") + "\n")
    stream.flush()


class TeeProgress:
    """The terminal's bar and, for a log that stdout is redirected to (``make demo > log``), the
    plain lines there too."""

    def __init__(self, bar: RichProgress, log: PlainProgress) -> None:
        self.bar, self.log, self.console = bar, log, bar.console

    def update(self, *args, **kwargs) -> None:
        self.bar.update(*args, **kwargs)
        self.log.update(*args, **kwargs)

    def advance(self, steps: int = 1) -> None:
        self.bar.advance(steps)
        self.log.advance(steps)

    def finish(self) -> None:
        self.log.finish()

    def print(self, text: str) -> None:
        self.bar.print(text)
        self.log.print(text)


def _stdout_is_a_log(console: Console) -> bool:
    """stdout goes to a file or a pipe while the bar is drawn on stderr's terminal."""
    try:
        return console.stderr and not sys.stdout.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stdout
        return False


def announce(console: Console, text: str, bold: str = "") -> None:
    """A stage's line (``bold``: a prefix of ``text``, bold on a terminal): one line on
    ``console`` whatever its length, and on stdout too when stdout is a log while the bars are
    drawn on the terminal (``make demo > log``), as the progress lines are."""
    rest = escape(text.removeprefix(bold))
    console.print(f"[bold]{escape(bold)}[/bold]{rest}" if bold else rest, soft_wrap=True, highlight=False)
    if is_interactive(console) and _stdout_is_a_log(console):
        write_line(sys.stdout, text)


@contextmanager
def progress(description: str, total: int | None = None, completed: int = 0, *, label: str = "",
             console: Console | None = None, enabled: bool = True, unit: str = "",
             counts: Callable[[int], str] | None = None, every_s: float = 0.0,
             listener: Callable[[str], None] | None = None) -> Iterator[RichProgress | PlainProgress | None]:
    """A progress reporter for the block: a rich bar when ``console`` (default: stderr's) is a
    terminal (and plain lines on stdout too when stdout is redirected: ``make demo > log``),
    else :class:`PlainProgress` lines on stderr; ``None`` when not ``enabled``.

    ``label`` names the work in a plain line (``[label]``); on a terminal the bar shows
    ``label: description``, as before. ``listener`` gets every plain line (none while only a
    bar is drawn)."""
    console = console or Console(stderr=True)
    if not enabled:
        yield None
        return
    if not is_interactive(console):
        yield PlainProgress(label, description, total, completed, unit=unit, counts=counts, every_s=every_s,
                            console=console, listener=listener)
        return
    from rich.progress import Progress

    log = sys.stdout if _stdout_is_a_log(console) else None  # before rich's Live redirects sys.stdout
    with Progress(console=console, transient=True) as bar:
        text = f"{label}: {description}" if label else description
        task = bar.add_task(escape(text), total=total, completed=completed)
        shown = RichProgress(bar, task, console, label)
        if log is not None:
            yield TeeProgress(shown, PlainProgress(label, description, total, completed, unit=unit, counts=counts,
                                                   every_s=every_s, stream=log, listener=listener))
        else:
            yield shown
