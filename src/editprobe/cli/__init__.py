"""Command line: thin wrappers that parse, call the package and print.

Each command group lives in its own module and is attached here.
"""

from __future__ import annotations

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Knowledge editing, evaluated beyond the literal target string.")


def _attach() -> None:
    from . import data as data_cmds
    from . import models as model_cmds

    app.add_typer(model_cmds.app, name="models", help="Built-in models and the model cache.")
    app.add_typer(data_cmds.app, name="data", help="Inspect and check datasets.")
    for module_name in ("edit", "demo", "run", "trace", "analyze"):
        try:
            module = __import__(f"editprobe.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"editprobe.cli.{module_name}":
                raise
            continue
        module.register(app)


_attach()


def main() -> None:
    app()
