"""Shared CLI helpers: one clear error line, hparam overrides, run-config files."""

from __future__ import annotations

from pathlib import Path

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


def read_run_config(path: Path) -> dict:
    """A run config YAML's fields; one clear error when it is unreadable or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        fail(f"cannot read run config {path}: {exc}")
    if not isinstance(raw, dict):
        fail(f"{path}: a run config must be a mapping of fields")
    return raw
