"""`editprobe run` (the experiment of evaluation-protocol.md §2–4, checkpointed) and
`editprobe report RUN_DIR...` (its tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from .common import fail, parse_overrides, read_run_config

console = Console()


def _fields(config: Optional[Path], out: Optional[Path], resume: bool) -> dict[str, Any]:
    """The base fields: the YAML config, else (on --resume) the run's saved config, else none."""
    if config is not None:
        return read_run_config(config)
    saved = out / "config.json" if out is not None else None
    if resume and saved is not None and saved.is_file():
        return json.loads(saved.read_text())
    return {}


def run(
    config: Optional[Path] = typer.Option(None, "--config", help="run config YAML (flags override its fields)"),
    model: Optional[str] = typer.Option(None, help="built-in name, local directory or hub id"),
    method: list[str] = typer.Option([], "--method", help="editing method; repeat for several"),
    data: list[str] = typer.Option([], "--data", help="dataset file or built-in name; repeat for several"),
    n: Optional[int] = typer.Option(None, help="records per dataset (paper: 2000)"),
    batch_size: Optional[int] = typer.Option(None, help="requests per sequential batch (paper: 100)"),
    preserve_previous: Optional[bool] = typer.Option(None, "--preserve-previous/--no-preserve-previous",
                                                     help="keep earlier batches' keys in the solve (Table 6 switch)"),
    seed: Optional[int] = typer.Option(None, help="seed of every batch"),
    out: Optional[Path] = typer.Option(None, help="run directory (new, or the one to --resume)"),
    hparams: Optional[str] = typer.Option(None, help="hparams model key or YAML (default: the model's shipped key)"),
    set_: list[str] = typer.Option([], "--set", help="override one hparam: key=value (YAML value)"),
    negation_table: Optional[str] = typer.Option(None, help="user YAML 'template: negated template'"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint after every k-th batch (default 1)"),
    resume: bool = typer.Option(False, "--resume", help="continue the unfinished run in --out"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (numbers can depend on it)"),
) -> None:
    """Edit and evaluate: no-edit baseline, positive and negated editing runs, fact-checking."""
    from ..data.errors import DataError
    from ..editing import HParamsError
    from ..runs import RunConfig, RunConfigError, RunExistsError, run_experiment

    fields = _fields(config, out, resume)
    flags = {"model": model, "methods": tuple(method) or None, "datasets": tuple(data) or None, "n": n,
             "batch_size": batch_size, "preserve_previous": preserve_previous, "seed": seed, "out": out,
             "hparams": hparams, "negation_table": negation_table, "dtype": dtype, "device": device,
             "checkpoint_every": checkpoint_every}
    fields.update({k: v for k, v in flags.items() if v is not None})
    if set_:
        fields["overrides"] = {**fields.get("overrides", {}), **parse_overrides(set_)}
    if "out" not in fields:
        fail("--out is required (or 'out:' in the config)")
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        cfg = RunConfig.build(fields)
        summary = run_experiment(cfg, resume=resume)
    except (RunConfigError, RunExistsError, HParamsError, DataError, ValueError, ArithmeticError, OSError) as exc:
        fail(exc)
    for r in summary["results"]:
        neg, fc = r["negation"], r["factcheck"]
        console.print(f"{r['dataset']} {r['method']}: PP {neg['PP']} PN {neg['PN']} NN {neg['NN']} NP {neg['NP']} "
                      f"Avg {neg['Avg']} | fact-check Eff {fc['Eff']} Acc {fc['Acc']} (n={fc['n']})")
    console.print(f"results in {cfg.out} (summary.json, samples.jsonl); tables: editprobe report {cfg.out}")


def report(
    run_dirs: list[Path] = typer.Argument(..., help="finished run directories (with --html also trace and analysis "
                                                    "directories)"),
    out: Path = typer.Option(Path("report"), help="where the .md/.csv/.tex tables go"),
    html: Optional[Path] = typer.Option(None, "--html", help="also write one self-contained HTML report (tables, "
                                                             "charts, trace/analysis figures, sample browser)"),
) -> None:
    """Negation, fact-check and (when runs differ in it) preserve-previous ablation tables;
    with --html also one self-contained page of them, charts, traces, analyses and samples."""
    from ..report import load_summaries, write_tables
    from ..report.html import ReportInputError, classify_dirs, write_html

    try:
        sources = classify_dirs(run_dirs)
    except ReportInputError as exc:
        fail(exc)
    if not sources.runs and html is None:
        fail("no finished run directory (summary.json) among the arguments; trace and analysis directories "
             "are shown only with --html")
    summaries: list[dict[str, Any]] = []
    if sources.runs:
        try:
            summaries = load_summaries(sources.runs)
        except (OSError, ValueError, KeyError) as exc:
            fail(exc)
        try:
            text = write_tables(summaries, out)
        except KeyError as exc:
            fail(f"a run summary lacks the field {exc}; was it written by this version?")
        # Plain echo: rich would wrap wide table lines and break the Markdown.
        typer.echo(text)
        typer.echo(f"tables (md, csv, tex) in {out}")
    if html is not None:
        try:
            write_html(html, sources, summaries)
        except ReportInputError as exc:
            fail(exc)
        except KeyError as exc:
            fail(f"a run summary or sample lacks the field {exc}; was it written by this version?")
        except (OSError, ValueError) as exc:
            fail(f"cannot write the HTML report: {exc}")
        typer.echo(f"HTML report in {html}")


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("report")(report)
