"""`editprobe methods list` and `editprobe probes list`: what is registered (built-in and a
user's plug-ins from $EDITPROBE_PLUGINS), as plain text columns or JSON.

Plain text, not a rich table: the columns keep their order and names, one row a line, so a
script can read them and a log shows them whole whatever the terminal's width."""

from __future__ import annotations

import json

import typer

methods_app = typer.Typer(no_args_is_help=True)
probes_app = typer.Typer(no_args_is_help=True)

JSON_OPTION = typer.Option(False, "--json", help="one JSON list of objects instead of the columns")


def columns(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    """Left-aligned columns two spaces apart; the last one unpadded."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def method_rows() -> list[dict]:
    """Every registered method: its name, kind (LTE or another editor), whether the edit is
    in the weights (a saved checkpoint holds it) and the models it has shipped settings for."""
    from ..editing import METHODS, lte_methods  # the package registers the built-in methods
    from ..editing.settings.hparams import available

    lte = set(lte_methods())
    return [{"name": name, "kind": "LTE" if name in lte else "other",
             "edit_in_weights": bool(cls.edit_in_weights), "settings": available(name)}
            for name, cls in METHODS.items()]


def probe_rows() -> list[dict]:
    """Every registered probe: its name, whether a run measures it by default, and the
    probe's own one-line description."""
    from ..probes import PROBES

    return [{"name": name, "default": bool(probe.default), "description": " ".join(probe.description.split())}
            for name, probe in PROBES.items()]


@methods_app.command("list")
def methods_list(as_json: bool = JSON_OPTION) -> None:
    """Registered editing methods: kind (LTE or other editor), edit in the weights, shipped settings."""
    rows = method_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(columns(("name", "kind", "in weights", "shipped settings (model keys)"),
                       [(r["name"], r["kind"], "yes" if r["edit_in_weights"] else "no",
                         ", ".join(r["settings"]) or "-") for r in rows]))


@probes_app.command("list")
def probes_list(as_json: bool = JSON_OPTION) -> None:
    """Registered probes: measured by default or opt-in (--probe NAME), and what each measures."""
    rows = probe_rows()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(columns(("name", "runs", "what it measures"),
                       [(r["name"], "default" if r["default"] else "opt-in", r["description"] or "-") for r in rows]))


def register(app: typer.Typer) -> None:
    app.add_typer(methods_app, name="methods", help="Registered editing methods.")
    app.add_typer(probes_app, name="probes", help="Registered probes (what a run measures).")
