"""`editprobe models ...`"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("pull")
def pull_cmd(name: str = typer.Argument(..., help="built-in model name, e.g. smollm2-135m"), force: bool = False) -> None:
    """Dequantize a built-in model once and cache it as safetensors."""
    from ..models.builtin import is_cached, pull

    was_cached = is_cached(name)
    path = pull(name, force=force)
    console.print(f"{name}: {'already cached' if was_cached and not force else 'cached'} at {path}")


@app.command("list")
def list_cmd() -> None:
    """Built-in models and whether they are cached."""
    from ..models.builtin import BUILTIN_MODELS, builtin_cache_path, is_cached

    table = Table("name", "cached", "license", "description", "path")
    for name, spec in BUILTIN_MODELS.items():
        cached = is_cached(name)
        table.add_row(name, "yes" if cached else "no", spec.license, spec.description,
                      str(builtin_cache_path(name)) if cached else "-")
    console.print(table)
