"""`editprobe trace`: ROME-style causal tracing; heat maps, per-record arrays and the
decisive MLP layers for MEMIT-style editing."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..progress import progress
from .common import fail, set_threads, warn

console = Console()


def trace(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    data: str = typer.Option("counterfact-sample", help="dataset file or built-in name"),
    n: int = typer.Option(50, help="number of records to read (only those the model knows are traced)"),
    out: Path = typer.Option(..., help="output directory (trace.json, heat maps, per-record arrays)"),
    layers_window: int = typer.Option(10, help="layers restored together for the mlp and attn kinds"),
    samples: int = typer.Option(10, help="noisy copies of each prompt"),
    noise: float = typer.Option(3.0, help="noise scale, as a multiple of the subject-embedding std"),
    seed: int = typer.Option(0, help="seed of the noise"),
    threads: Optional[int] = typer.Option(None, help="CPU threads for torch (default: torch's choice)"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
) -> None:
    """Corrupt the subject, restore one hidden state at a time, and report where the fact lives."""
    from ..analysis.tracing import TraceSettings
    from ..runs.lengths import PromptLengths
    from ..runs.preflight import check_datasets, check_model_and_device
    from ..workdir import WorkDir

    # Cheap checks first: a typo should not cost a model load.
    if n < 1:
        fail(f"--n must be at least 1, got {n}")
    settings = TraceSettings(samples=samples, noise=noise, layers_window=layers_window, seed=seed).check()
    records, warnings = check_datasets([data], n, PromptLengths(model, probe_prompts=False, option=None, can_skip=False))
    for line in warnings:
        warn(line)
    work = WorkDir(out, "trace")
    work.check()  # a directory editprobe did not make as a trace is never written into
    check_model_and_device(model, device)
    set_threads(threads)
    with work.hold():
        _trace(model, data, out, settings, records[data], device)


def _trace(model: str, data: str, out: Path, settings, records, device) -> None:
    from ..analysis.trace_output import save_trace
    from ..analysis.tracing import run_trace
    from ..models import load_model

    # fp32: the effects are differences of probabilities, too small for bf16.
    loaded = load_model(model, dtype="float32", device=device)

    # A line per record would be hundreds: at most one every 10 s off a terminal.
    with progress("finding known records", label="causal tracing", console=console, every_s=10) as bar:

        def on_known(count: int) -> None:
            bar.update(description="records", total=count, completed=0)

        result = run_trace(loaded.model, loaded.tokenizer, loaded.adapter, records, settings,
                           on_known=on_known, on_record=lambda _: bar.advance())
    summary = save_trace(result, out, model, data, loaded.tokenizer)
    rec = summary["recommendation"]
    curve = summary["kinds"]["mlp"]["buckets_by_layer"][2]
    console.print(f"causal tracing of {model}: {summary['n_known']} of {summary['n_requested']} records known; "
                  f"p clean {summary['kinds']['mlp']['high']:.3f}, corrupted {summary['kinds']['mlp']['low']:.3f} "
                  f"(noise {settings.noise} × std {summary['noise_std']:.4f}, {settings.samples} samples)")
    console.print(f"MLP peak at the last subject token: layer {rec['peak_layer']} "
                  f"(average indirect effect {curve[rec['peak_layer']]:.3f}); "
                  f"suggested MEMIT layers: {rec['window']}")
    console.print(f"trace.json, heat maps and per-record arrays in {out}")


def register(app: typer.Typer) -> None:
    app.command("trace")(trace)
