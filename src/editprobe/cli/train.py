"""`editprobe train rledit`: train RLEdit's hypernetwork for a model (checkpointed, resumable)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..progress import progress
from .common import fail, parse_overrides, set_threads, warn

app = typer.Typer(no_args_is_help=True)
console = Console()


@app.command("rledit")
def rledit(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    data: list[str] = typer.Option([], "--data", help="training records (repeatable; default: the built-in "
                                                      "counterfact-train, 2000 records disjoint from the samples)"),
    out: Path = typer.Option(..., help="training directory (new, or the one to --resume)"),
    hparams: Optional[str] = typer.Option(None, help="RLEdit's settings file: a model key or YAML (default: the "
                                                     "model's), as --hparams of the other commands (--settings: its "
                                                     "old name, still accepted)"),
    # The earlier name of --hparams, kept for scripts; hidden beside --setting, which it resembled.
    settings: Optional[str] = typer.Option(None, "--settings", hidden=True),
    setting: Optional[str] = typer.Option(None, help="a named setting of that file: reduced | reference"),
    set_: list[str] = typer.Option([], "--set", help="override one setting: key=value (YAML value)"),
    exclude: list[str] = typer.Option([], "--exclude", help="evaluation data whose subjects and prompts training "
                                                            "must not see (repeatable; default: the built-in "
                                                            "counterfact-sample and zsre-sample)"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    checkpoint_every: int = typer.Option(1, help="checkpoint after every k-th batch (and the last)"),
    resume: bool = typer.Option(False, "--resume", help="continue the training in --out from its checkpoint"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
) -> None:
    """Train RLEdit's hypernetwork on a sequence of edit batches."""
    from ..jobs.train_rledit import DEFAULT_DATA, DEFAULT_EXCLUDE, TrainConfig, TrainJob

    if hparams is not None and settings is not None:
        fail("--settings is the old name of --hparams (the settings file): give one")
    settings = hparams if hparams is not None else settings
    config = TrainConfig.build({"model": model, "data": tuple(data) or DEFAULT_DATA, "out": out, "settings": settings,
                                "setting": setting, "overrides": parse_overrides(set_),
                                "exclude": tuple(exclude) or DEFAULT_EXCLUDE, "dtype": dtype, "device": device,
                                "checkpoint_every": checkpoint_every})
    set_threads(threads)
    job = TrainJob(config)
    for line in job.preflight(resume):
        warn(line)
    typer.echo(f"rledit on {model}: {len(job.records)} training records ({job.n_dropped} dropped: they share a "
               f"subject or prompt with {', '.join(config.exclude)}), {job.settings.n_steps} batches of "
               f"{job.settings.batch_size}")
    with progress("training", job.settings.n_steps, job.checkpoint_step(resume), label="train rledit",
                  console=console, unit="batch") as bar:
        info = job.run(resume=resume, on_step=lambda step, total, stats: bar.update(completed=step, total=total))
    last = info["history"][-1] if info["history"] else {}
    typer.echo(f"trained in {info['seconds_this_process']:.0f} s; last batch loss {last.get('loss', float('nan')):.3f}, "
               f"edit loss after its shift {last.get('edit_loss', float('nan')):.3f}")
    cached = f"cached for runs: {info['cached']}" if info["cached"] else "not cached: see the warning"
    typer.echo(f"hypernetwork in {out / 'hypernet'} ({cached})")


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="train", help="Train an editor that learns (RLEdit's hypernetwork).")
