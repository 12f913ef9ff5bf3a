"""Shared CLI helpers: one clear error line, hparam overrides."""

from __future__ import annotations

import typer
import yaml
from rich.console import Console

err = Console(stderr=True)


def fail(exc: BaseException | str, code: int = 2) -> None:
    err.print(f"[red]error:[/red] {exc}", highlight=False)
    raise typer.Exit(code)


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            fail(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out
