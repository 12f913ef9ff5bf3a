"""`editprobe evaluate`: an edited checkpoint measured against its original (docs/evaluate.md).

Named ``evaluate``, not ``probe``, so it is not confused with the ``--probe`` option that
chooses the probes of this command, of ``run`` and of a study.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import OnBadRecordChoice, on_bad_record_option, set_threads, warn


def evaluate(
    edited: str = typer.Option(..., help="the edited model: a checkpoint directory (safetensors) or hub id"),
    original: Optional[str] = typer.Option(None, help="the model it is an edit of: built-in name, directory or hub id "
                                                      "(default: the one its editprobe-edit.json names)"),
    data: Optional[str] = typer.Option(None, help="the records it was edited with: dataset file or built-in name "
                                                  "(default: its editprobe-edit.json's)"),
    n: Optional[int] = typer.Option(None, help="how many records (default: its editprobe-edit.json's, else 100)"),
    probe: list[str] = typer.Option([], "--probe", help="a probe to measure (name or module:attribute); repeat for "
                                                        "several (default: every default probe, where it applies)"),
    out: Path = typer.Option(..., help="run directory (new, or the one to --resume)"),
    label: Optional[str] = typer.Option(None, help="the rows' label beside 'external' (default: the checkpoint's "
                                                   "directory or repository name)"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16 (default: its editprobe-edit.json's, "
                                                   "else its config's)"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    negation_table: Optional[str] = typer.Option(None, help="user YAML 'template: negated template'"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code",
                                           help="run the original model's own code from its repository (off unless "
                                                "asked)"),
    resume: bool = typer.Option(False, "--resume", help="continue the unfinished evaluation in --out"),
    on_bad_record: OnBadRecordChoice = on_bad_record_option(OnBadRecordChoice.error),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
) -> None:
    """Evaluate an edited checkpoint against its original: PP and PN, fact-checking, the classic
    metrics and the battery, as a run directory `report` reads beside editprobe's runs."""
    from ..jobs.evaluate import EvaluateConfig, EvaluateJob
    from .run import result_line

    config = EvaluateConfig.build({"edited": edited, "original": original, "data": data, "n": n,
                                   "probes": tuple(probe), "out": out, "label": label, "dtype": dtype,
                                   "device": device, "negation_table": negation_table,
                                   "trust_remote_code": trust_remote_code, "on_bad_record": on_bad_record.value})
    set_threads(threads)
    job = EvaluateJob(config)
    for line in job.preflight(resume):
        warn(line)
    summary = job.run(resume=resume)
    for r in summary.results:
        typer.echo(result_line(r))
    fp = summary.results[0].hparams.get("fingerprint", "") if summary.results else ""
    typer.echo(f"checkpoint fingerprint sha256 {fp}")
    typer.echo(f"results in {out} (summary.json, samples.jsonl); tables: editprobe report {out}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate)
