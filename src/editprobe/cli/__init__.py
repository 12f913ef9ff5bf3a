"""Command line: thin wrappers that parse, call the package and print.

Each command group lives in its own module and is attached here. :func:`main` is the one
error path: an expected failure (:class:`~editprobe.errors.UserError`, a usage error) prints
one plain ``error: ...`` line and exits with code 2; anything else is a bug: one line saying
so, exit code 1, and the traceback with ``editprobe --debug ...``. Ctrl-C, wherever it lands,
is ``error: interrupted`` and exit code 130.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback
import warnings
from contextlib import contextmanager
from pathlib import Path


def _exit_interrupted(signum, frame) -> None:
    os.write(2, b"error: interrupted\n")
    os._exit(130)


@contextmanager
def _ctrl_c_exits_while_importing():
    """Ctrl-C while the program imports its commands (before main(); nothing written yet)
    is ``error: interrupted``, exit 130, not an import traceback. Only for the program (the
    console script, ``python -m editprobe``): a library user's process keeps its handler."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = Path(sys.argv[0] if sys.argv else "").name == "editprobe" or getattr(spec, "name", "") in (
        "editprobe", "editprobe.__main__")
    guard = (program and threading.current_thread() is threading.main_thread()
             and signal.getsignal(signal.SIGINT) is signal.default_int_handler)
    if guard:
        signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        yield
    finally:
        if guard:
            signal.signal(signal.SIGINT, signal.default_int_handler)


with _ctrl_c_exits_while_importing():
    import typer

    # typer (pinned) ships its own copy of click; its usage errors are of that copy's classes.
    from typer._click import exceptions as click
    from typer._click.utils import PacifyFlushWrapper

    from ..errors import EditprobeWarning, UserError
    from ..registry import load_plugins
    from . import analyze, catalog, data, demo, edit, evaluate, models, report, run, study, trace, train, tune
    from .common import print_error, warn
    from .stdout import guarded_stdout

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Knowledge editing, evaluated beyond the literal target string.")

DEBUG_ENV = "EDITPROBE_DEBUG"


def _print_version(value: bool) -> None:
    if value:
        from importlib import metadata  # the installed distribution's version, as pip sees it

        typer.echo(f"editprobe {metadata.version('editprobe')}")
        raise typer.Exit(0)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="on an unexpected error, print its traceback"),
          version: bool = typer.Option(False, "--version", is_eager=True, expose_value=False,
                                       callback=_print_version, help="print the version and exit")) -> None:
    """Knowledge editing, evaluated beyond the literal target string."""


app.add_typer(models.app, name="models", help="Built-in models and the model cache.")
app.add_typer(data.app, name="data", help="Inspect and check datasets.")
catalog.register(app)  # methods list, probes list
for _module in (edit, demo, run, evaluate, study, report, trace, analyze, train, tune):
    _module.register(app)


def _debug_requested(args: list[str]) -> bool:
    if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
        return True
    for arg in args:  # --debug belongs to the root, before the command name
        if arg == "--debug":
            return True
        if not arg.startswith("-"):
            return False
    return False


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    try:
        args = sys.argv[1:] if argv is None else list(argv)
        debug = _debug_requested(args)
        with warnings.catch_warnings():
            warnings.simplefilter("default", EditprobeWarning)  # each distinct warning once
            warnings.showwarning = _show_warning
            with guarded_stdout():
                return _main(args, debug)
    except KeyboardInterrupt:
        # Whatever was running unwound as for any error (locks released, temporaries
        # removed); what is on disk is what a kill at the same point would leave.
        print_error("interrupted")
        return 130


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    if issubclass(category, EditprobeWarning):
        warn(message)
    else:
        _SHOW_WARNING(message, category, filename, lineno, file, line)


_SHOW_WARNING = warnings.showwarning


def _invoke(args: list[str]):
    """Parse ``args`` and run the command; its return value. Not ``command.main``: typer's
    main turns a KeyboardInterrupt into a silent exit code 130, so Ctrl-C said nothing."""
    command = typer.main.get_command(app)
    try:
        with command.make_context("editprobe", args) as ctx:
            return command.invoke(ctx)
    except typer.Exit as exc:  # --help, ctx.exit()
        return exc.exit_code


def _main(args: list[str], debug: bool) -> int:
    try:
        load_plugins()  # $EDITPROBE_PLUGINS: a user's methods, adapters, formats, probes
        result = _invoke(args)
        sys.stdout.flush()  # a full disk behind stdout shows now, as one line, not at exit
        return result if isinstance(result, int) else 0
    except click.NoArgsIsHelpError as exc:
        typer.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 2
    except click.UsageError as exc:
        where = f"{exc.ctx.command_path}: " if exc.ctx else ""
        hint = f" (see {exc.ctx.command_path} --help)" if exc.ctx else ""
        print_error(f"{where}{exc.format_message()}{hint}")
        return 2
    except click.ClickException as exc:
        print_error(exc.format_message())
        return exc.exit_code
    except (typer.Abort, EOFError):
        print_error("aborted")
        return 1
    except UserError as exc:
        print_error(exc)
        return 2
    except BrokenPipeError:  # the reader of stdout went away (`| head`): stop quietly
        sys.stdout = PacifyFlushWrapper(sys.stdout)
        return 1
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug, said so plainly
        if debug:
            traceback.print_exc()
        detail = f"{type(exc).__name__}: {exc}"
        tail = "(traceback above)" if debug else "(run it again as editprobe --debug ... for the traceback)"
        print_error(f"internal error, please report it: {detail} {tail}")
        return 1
