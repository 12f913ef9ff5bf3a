"""The generated command-line reference (docs/cli.md via docs/_hooks/cli_reference.py):
every command and subcommand with its options, plain text only."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import typer

from editprobe.cli import app

HOOK = Path(__file__).resolve().parents[1] / "docs" / "_hooks" / "cli_reference.py"


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _commands(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        if not sub.hidden:
            yield from _commands(sub, f"{path} {name}")


def test_every_command_and_option_is_in_the_reference():
    text = _hook().render_reference()
    assert "\x1b" not in text and "╭" not in text  # no ANSI, no rich panels
    commands = list(_commands(typer.main.get_command(app), "editprobe"))
    assert len(commands) > 10
    for path, command in commands:
        assert f"## `{path}`" in text, path
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--"):
                    assert opt in text, (path, opt)


def test_the_page_marker_is_replaced():
    hook = _hook()
    page = type("Page", (), {"file": type("File", (), {"src_uri": "cli.md"})()})()
    out = hook.on_page_markdown(f"# Command line\n\n{hook.MARKER}\n", page, None, None)
    assert hook.MARKER not in out and "`editprobe run`" in out
    other = type("Page", (), {"file": type("File", (), {"src_uri": "index.md"})()})()
    assert hook.on_page_markdown(hook.MARKER, other, None, None) == hook.MARKER
