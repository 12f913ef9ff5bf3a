"""`editprobe demo`: the main job on a fresh machine — edit the built-in model with MEMIT
and AlphaEdit, evaluate on positive and negated queries and by fact-checking, print the
paper's tables (docs/protocol.md) and say where everything is.

The run directory is reused: an unfinished demo run is resumed, a finished one with the
same settings is reported again without recomputing; ``--fresh`` starts over."""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape

from .common import OnBadRecordChoice, fail, max_prompt_tokens_option, on_bad_record_option, set_threads, warn

console = Console()


def demo_config_fields(path: Path | None = None) -> dict:
    """The shipped demo settings (runs/builtin/demo.yaml), or a user's run config YAML."""
    from ..runs.config import read_config_file
    from ..yamlio import parse_yaml

    if path is None:
        return parse_yaml(resources.files("editprobe.runs").joinpath("builtin/demo.yaml").read_text())
    return read_config_file(path)


def demo(
    out: Path = typer.Option(Path("runs/demo"), help="run directory (resumed or re-reported when it exists)"),
    config: Optional[Path] = typer.Option(None, "--config", help="run config YAML instead of the shipped demo settings"),
    n: Optional[int] = typer.Option(None, help="records (default 40)"),
    batch_size: Optional[int] = typer.Option(None, help="requests per sequential batch (default 20)"),
    method: list[str] = typer.Option([], "--method", help="editing method; repeat for several (default memit, alphaedit)"),
    model: Optional[str] = typer.Option(None, help="model (default: the built-in smollm2-135m)"),
    data: Optional[str] = typer.Option(None, help="dataset (default: the built-in counterfact-sample)"),
    fresh: bool = typer.Option(False, "--fresh", help="delete the run directory's earlier demo run first"),
    max_prompt_tokens: Optional[int] = max_prompt_tokens_option(),
    on_bad_record: Optional[OnBadRecordChoice] = on_bad_record_option(),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
) -> None:
    """Edit the built-in model (MEMIT, AlphaEdit), evaluate negation and fact-checking, print the tables."""
    from ..report import load_summaries, write_tables
    from ..runs import Experiment, RunConfig, RunDir, RunPlan

    flags = {"n": n, "batch_size": batch_size, "methods": tuple(method) or None, "model": model,
             "datasets": (data,) if data else None, "out": out, "max_prompt_tokens": max_prompt_tokens,
             "on_bad_record": on_bad_record.value if on_bad_record else None}
    cfg = RunConfig.from_sources(None, flags, base=demo_config_fields(config))
    set_threads(threads)
    run_dir = RunDir(out)
    run_dir.check_location()  # a directory that is not a run's is refused before anything else
    experiment = Experiment(RunPlan.build(cfg))  # every check before --fresh deletes anything
    warnings = experiment.check_inputs()
    if fresh:
        run_dir.reset()
    started = time.perf_counter()
    if run_dir.finished:
        if not run_dir.matches(cfg):
            fail(f"{out} holds a finished run with other settings; pass --fresh or another --out")
        typer.echo(f"{out} already holds this finished demo run; reporting it (--fresh recomputes)")
    else:
        for line in warnings:
            warn(line)
        console.print(escape(f"editing {cfg.model} with {', '.join(cfg.methods)}: {cfg.n} records of "
                             f"{', '.join(cfg.datasets)} in batches of {cfg.batch_size} -> {out}"), soft_wrap=True)
        experiment.run(resume=run_dir.has_config)
    report_dir = out / "report"
    text = write_tables(load_summaries([out]), report_dir)
    typer.echo("")
    typer.echo(text)
    typer.echo(_reading_guide())
    typer.echo(f"run: {out}/summary.json (config, versions, timings), {out}/samples.jsonl (every query and answer)")
    typer.echo(f"tables: {report_dir}/negation.md|csv|tex, {report_dir}/factcheck.md|csv|tex, "
               f"{report_dir}/classic.md|csv|tex")
    typer.echo(f"wall time: {time.perf_counter() - started:.0f} s")


def _reading_guide() -> str:
    return (
        "\nHow to read it: PP is the usual edit success (positive query after a positive edit). PN is\n"
        "how often the *negated* query also yields the new target — a real change of meaning keeps it\n"
        "low; a subject->target shortcut drives it up with PP. Fact-check Acc is how often the edited\n"
        "model, asked in its chat template, judges the edited statement true; far below Eff (= PP)\n"
        "means the edit did not change what the model believes. The classic table holds the metrics\n"
        "other papers report (efficacy, paraphrase, neighborhood, perplexity), each column's protocol\n"
        "in the legend under it.\n"
    )


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
