"""Run the real command line (``editprobe.cli.main``: its one error path included)
in-process, with stdout and stderr captured as click's CliRunner captures them. No tests here."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from click.testing import CliRunner

from editprobe.cli import main


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str
    output: str  # stdout and stderr interleaved, as a terminal shows them

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def invoke(args, env: dict | None = None, input: str | None = None) -> CliResult:
    runner = CliRunner()
    with runner.isolation(input=input, env=env) as (stdout, stderr, output):
        code = main([str(a) for a in args])
        sys.stdout.flush()
        sys.stderr.flush()
    return CliResult(code, stdout.getvalue().decode(), stderr.getvalue().decode(), output.getvalue().decode())


def deterministic_tables(report_stdout: str) -> str:
    """The tables ``editprobe report`` printed, without the cost table (measured seconds,
    which differ between equal runs) and the closing "tables (md ..." line."""
    text = report_stdout.split("tables (md")[0]
    return re.sub(r"### Cost:.*?(?=### |\Z)", "", text, flags=re.S)
