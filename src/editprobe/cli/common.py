"""Shared CLI helpers: the error and warning lines, hparam overrides, threads."""

from __future__ import annotations

import sys
from enum import Enum

import yaml

from ..errors import OptionError, clip, one_line, quoted
from ..yamlio import YAMLInputError, parse_yaml


class OnBadRecordChoice(str, Enum):
    """``--on-bad-record``: what a malformed or over-long record does."""

    error = "error"
    skip = "skip"


def print_error(message: object) -> None:
    """``error: ...`` on stderr: one line, no markup interpretation, no wrapping."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()


def warn(message: object) -> None:
    sys.stderr.write(f"warning: {one_line(message)}\n")
    sys.stderr.flush()


def fail(message: object) -> None:
    """Stop with one error line (exit code 2): the CLI's main prints it."""
    raise OptionError(one_line(message))


def parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        if "=" not in item:
            fail(f"--set expects key=value, got {quoted(item)}")
        key, value = item.split("=", 1)
        if not key.strip():
            fail(f"--set {quoted(item)}: the key is empty")
        try:
            out[key.strip()] = parse_yaml(value)
        except YAMLInputError as exc:
            fail(f"--set {clip(key.strip())}: {exc}")
        except yaml.YAMLError as exc:
            fail(f"--set {quoted(item)}: the value is not YAML: {exc}")
    return out


def set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        fail(f"--threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)
