"""`editprobe edit`: sequential batch editing from a dataset, with efficacy before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..progress import progress
from .common import (
    MquakeUnitChoice, OnBadRecordChoice, ZsreTargetChoice, max_prompt_tokens_option, mquake_unit_option,
    on_bad_record_option, one_method, one_method_option, parse_overrides, set_threads, warn, zsre_target_option)

console = Console()


def edit(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    methods: list[str] = one_method_option("memit", "the editing method, one (rome | memit | emmet | alphaedit | "
                                                    "...; several: editprobe run)"),
    data: str = typer.Option("counterfact-sample", help="dataset file or built-in name"),
    n: int = typer.Option(100, help="number of records to edit"),
    batch_size: int = typer.Option(50, help="requests per batch (edits accumulate across batches)"),
    out: Path = typer.Option(..., help="output directory (editor state, deltas, report)"),
    hparams: Optional[str] = typer.Option(None, help="hparams YAML, model key or a folder of <method>.yaml files "
                                                     "(default: the model's shipped YAML)"),
    profile: Optional[str] = typer.Option(
        None, help="hparams profile: paper (the paper's text, float32) or paper-code (its code's values, bfloat16)"),
    set_: list[str] = typer.Option([], "--set", help="override one hparam: key=value (YAML value)"),
    preserve_previous: Optional[bool] = typer.Option(None, "--preserve-previous/--no-preserve-previous"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    seed: int = typer.Option(0, help="seed of every batch and of the context templates or IKE's demonstrations "
                                      "(0: the file's template_seed / seed), as run's --seed"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an earlier edit result in --out"),
    target_cache: bool = typer.Option(True, "--target-cache/--no-target-cache",
                                      help="reuse target vectors optimized before on the same model state and settings"),
    max_prompt_tokens: Optional[int] = max_prompt_tokens_option("a record's prompt with its target"),
    on_bad_record: OnBadRecordChoice = on_bad_record_option(OnBadRecordChoice.error),
    zsre_target: ZsreTargetChoice = zsre_target_option(ZsreTargetChoice.answers),
    mquake_unit: MquakeUnitChoice = mquake_unit_option(MquakeUnitChoice.case),
    negation_table: Optional[str] = typer.Option(None, help="user YAML 'template: negated template' for the requests' "
                                                          "opposite query (FT's negation augmentation, negation: defend)"),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="also save the edited model as a Hugging Face "
                                                                       "checkpoint (safetensors, config, tokenizer and "
                                                                       "what made it) in this directory"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
) -> None:
    """Edit N records sequentially in batches; save the editor state; print efficacy."""
    from ..jobs.edit import EditConfig, EditJob

    method = one_method(methods, "edit", "use `editprobe run --method A --method B` for several (one result each)")
    overrides = parse_overrides(set_)
    if preserve_previous is not None:
        overrides["preserve_previous"] = preserve_previous
    config = EditConfig.build({"model": model, "method": method, "data": data, "n": n, "batch_size": batch_size,
                               "out": out, "hparams": hparams, "profile": profile, "overrides": overrides, "dtype": dtype,
                               "device": device, "seed": seed, "overwrite": overwrite, "target_cache": target_cache,
                               "max_prompt_tokens": max_prompt_tokens, "on_bad_record": on_bad_record.value,
                               "zsre_target": zsre_target.value, "mquake_unit": mquake_unit.value,
                               "negation_table": negation_table, "save_model": save_model})
    set_threads(threads)
    job = EditJob(config)
    for line in job.preflight():
        warn(line)
    with progress("editing", label=method, console=console, unit="records") as bar:
        report = job.run(on_progress=lambda done, total: bar.update(completed=done, total=total))
    typer.echo(f"{method} on {model}: {report['n']} edits in batches of {batch_size}")
    typer.echo(f"PP efficacy (%, {report['metric']}): before {_with_interval(report, 'efficacy_before')}  "
               f"after {_with_interval(report, 'efficacy_after')}")
    typer.echo(f"state and report in {out}")
    if save_model is not None:
        typer.echo(f"edited model in {save_model} (editprobe evaluate --edited {save_model} --original {model})")


def _with_interval(report: dict, key: str) -> str:
    """``97.0 [93.1, 99.4]``: the value and its 95% interval, as every output shows it
    (docs/statistics.md)."""
    from ..probes.intervals import shown

    lo, hi = report.get(f"{key}_interval") or (None, None)
    return shown(report[key], lo, hi)


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)
