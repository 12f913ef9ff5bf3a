"""MkDocs hook: the command-line reference (docs/cli.md), generated from the commands.

At build time the marker line of ``cli.md`` is replaced by one section per command of the
Typer app ``editprobe.cli.app``: its description and the text ``editprobe COMMAND --help``
prints, so the page cannot drift from the code. The help is Click's plain formatter (the
base ``Command.format_help``, bypassing Typer's rich panels) at a fixed width of 100
columns: no ANSI escapes, no box drawing, the same page on every terminal.

Why not mkdocs-click: typer (pinned) vendors its own copy of Click (``typer._click``);
mkdocs-click's ``isinstance`` checks are against the real ``click`` package, so its table
style finds no options at all. Importing ``editprobe.cli`` imports neither torch nor
transformers (the commands import them when they run), so this takes a fraction of a second.
"""

from __future__ import annotations

import html
import re

MARKER = "<!-- editprobe:cli-reference -->"
WIDTH = 100
PROG = "editprobe"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def on_page_markdown(markdown: str, page, config, files) -> str:  # noqa: ARG001 - MkDocs hook signature
    if page.file.src_uri != "cli.md":
        return markdown
    if MARKER not in markdown:
        raise ValueError(f"docs/cli.md: the marker line {MARKER} is missing")
    return markdown.replace(MARKER, render_reference())


def render_reference() -> str:
    import typer
    from typer import _click

    from editprobe.cli import app

    root = typer.main.get_command(app)
    sections: list[tuple[int, str, str, str]] = []  # (depth, command path, short help, full help)

    def walk(command, parent, name: str, depth: int) -> None:
        if command.hidden:
            return
        ctx = _click.Context(command, info_name=name, parent=parent, terminal_width=WIDTH,
                             max_content_width=WIDTH)
        formatter = ctx.make_formatter()
        _click.core.Command.format_help(command, ctx, formatter)  # Click's plain help, not rich
        text = formatter.getvalue().rstrip()
        if _ANSI.search(text) or "\x1b" in text:
            raise ValueError(f"{ctx.command_path}: terminal escapes in the help text")
        short = (command.help or command.short_help or "").strip().split("\n\n")[0]
        sections.append((depth, ctx.command_path, " ".join(short.split()), text))
        for sub_name in command.list_commands(ctx) if hasattr(command, "list_commands") else []:
            walk(command.get_command(ctx, sub_name), ctx, sub_name, depth + 1)

    walk(root, None, PROG, 0)

    lines = ["| Command | What it does |", "| --- | --- |"]
    for _depth, path, short, _text in sections[1:]:
        lines.append(f"| [`{path}`](#{_anchor(path)}) | {_inline(short)} |")
    lines.append("")
    for depth, path, short, text in sections:
        level = "#" * min(2 + max(depth - 1, 0), 6)
        lines += [f"{level} `{path}` {{#{_anchor(path)}}}", "", _inline(short), "", "```text", text, "```", ""]
    return "\n".join(lines)


def _anchor(path: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def _inline(text: str) -> str:
    """Help text as literal Markdown: no emphasis, links, HTML or math."""
    text = html.escape(text, quote=False).replace("$", "&#36;").replace("|", "&#124;")
    return re.sub(r"([\\`*_\[\]])", r"\\\1", text)
