"""Shared CLI helpers: the error and warning lines, hparam overrides, threads."""

from __future__ import annotations

import sys
from enum import Enum

import typer
import yaml

from ..errors import OptionError, clip, one_line, quoted
from ..yamlio import YAMLInputError, parse_yaml


class OnBadRecordChoice(str, Enum):
    """``--on-bad-record``: what a malformed or over-long record does."""

    error = "error"
    skip = "skip"


def max_prompt_tokens_option(what: str = "a record's query"):
    """``--max-prompt-tokens``, as every command that feeds records to a model declares it."""
    return typer.Option(None, "--max-prompt-tokens", help=f"most tokens {what} may have, checked before the model "
                                                          "loads (default: the model's context length)")


def on_bad_record_option(default: OnBadRecordChoice | None = None):
    """``--on-bad-record``, as run, edit and demo declare it."""
    return typer.Option(default, "--on-bad-record", help="a malformed or over-long record: stop with an error naming "
                                                         "it (default), or skip it and count it in one warning")


class ZsreTargetChoice(str, Enum):
    """``--zsre-target``: what zsRE records are edited toward (data/options.py)."""

    answers = "answers"
    alt = "alt"


def zsre_target_option(default: ZsreTargetChoice | None = None):
    """``--zsre-target``, as every command that edits records declares it."""
    return typer.Option(default, "--zsre-target", help="zsRE's edit target: answers (answers[0], no old object: the "
                                                       "MEMIT/AlphaEdit and paper convention, the default) or alt "
                                                       "(EasyEdit's: alt, answers[0] as the old object)")


class MquakeUnitChoice(str, Enum):
    """``--mquake-unit``: what ``--n`` counts in MQuAKE (data/options.py)."""

    case = "case"
    rewrite = "rewrite"


def mquake_unit_option(default: MquakeUnitChoice | None = None):
    """``--mquake-unit``, as the commands that edit records declare it."""
    return typer.Option(default, "--mquake-unit", help="MQuAKE: case (n counts cases, a case's rewrites edited "
                                                       "together: the default) or rewrite (n counts single "
                                                       "rewrites, duplicates kept once: the paper's grid)")


def one_method_option(default: str, help: str):
    """``--method`` of a command that writes one result (edit, tune, analyze). Declared
    repeatable only so that a second ``--method`` is refused (:func:`one_method`) instead of
    silently replacing the first, as a single-valued option would."""
    return typer.Option([default], "--method", metavar="<str>", help=help)


def one_method(methods: list[str], command: str, several: str) -> str:
    """The one ``--method`` given; two or more: one error line saying what to use instead."""
    if len(methods) > 1:
        fail(f"{command} takes one --method, got {len(methods)} ({', '.join(methods)}); {several}")
    return methods[0]


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
