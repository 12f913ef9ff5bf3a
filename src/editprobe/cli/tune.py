"""`editprobe tune`: search a method's settings on a dev split; write an hparams YAML."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from ..progress import progress
from .common import (
    ZsreTargetChoice, max_prompt_tokens_option, one_method, one_method_option, parse_overrides, set_threads, warn, zsre_target_option)

console = Console()


def tune(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    methods: list[str] = one_method_option("memit", "a locate-then-edit method, one: memit | alphaedit | ..."),
    data: str = typer.Option(..., help="dev dataset (file or built-in name), disjoint from the evaluation records"),
    out: Path = typer.Option(..., help="the hparams YAML to write (with its evidence as comments)"),
    n: int = typer.Option(12, help="dev records edited by every trial"),
    batch_size: int = typer.Option(6, help="dev records per sequential batch (the pruner looks after each)"),
    trials: int = typer.Option(20, help="at most this many trials"),
    timeout: Optional[float] = typer.Option(None, help="minutes after which no new trial starts"),
    seed: int = typer.Option(0, help="seeds the sampler, every batch and the context templates (0: the base "
                                      "file's template_seed; another seed's is written to --out)"),
    eval_: list[str] = typer.Option([], "--eval", help="an evaluation set the dev records must not overlap; "
                                    "repeatable (default: counterfact-sample and zsre-sample)"),
    exclude_overlap: bool = typer.Option(False, "--exclude-overlap",
                                         help="skip dev records that overlap an evaluation set instead of refusing"),
    negative: bool = typer.Option(True, "--negative/--no-negative",
                                  help="also edit with the negated requests (NN, NP, Avg) for every finished trial"),
    layers: Optional[str] = typer.Option(None, help="candidate layers LO:HI (default: the base window -3/+4)"),
    width: Optional[str] = typer.Option(None, help="edit-window widths LO:HI (default 3:6; 1 for ROME)"),
    v_lr: str = typer.Option("0.05:2", help="target learning rate range (log scale)"),
    steps: str = typer.Option("10:50", help="target optimization steps range"),
    clamp: str = typer.Option("0.5:8", help="clamp_norm_factor range (log scale)"),
    lam: str = typer.Option("100:30000", help="λ (mom2_update_weight) range (log scale)"),
    l2: str = typer.Option("0.1:100", help="AlphaEdit's ridge L2 range (log scale; replaces λ there)"),
    hparams: Optional[str] = typer.Option(None, help="base hparams YAML or model key (default: the shipped file)"),
    profile: Optional[str] = typer.Option(None, help="base hparams profile: paper or paper-code"),
    set_: list[str] = typer.Option([], "--set", help="fix one hparam of every trial: key=value (YAML value)"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace an existing --out file"),
    max_prompt_tokens: Optional[int] = max_prompt_tokens_option("a dev record's query"),
    zsre_target: ZsreTargetChoice = zsre_target_option(ZsreTargetChoice.answers),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
) -> None:
    """Search the edit-layer window, v_lr, steps, clamp and λ (L2) with Optuna; write the best as hparams."""
    from ..jobs.tune.search import DEFAULT_EVAL, TuneConfig, Tuner, parse_range

    method = one_method(methods, "tune", "a search writes one method's hparams file: run tune once per method")
    fields = {
        "model": model, "method": method, "data": data, "out": out, "n": n, "batch_size": batch_size,
        "trials": trials, "timeout_min": timeout, "seed": seed, "evaluation": tuple(eval_) or DEFAULT_EVAL,
        "exclude_overlap": exclude_overlap, "negative": negative, "hparams": hparams, "profile": profile,
        "overrides": parse_overrides(set_), "dtype": dtype, "device": device, "overwrite": overwrite,
        "max_prompt_tokens": max_prompt_tokens, "zsre_target": zsre_target.value,
        "layers": parse_range(layers, "layers", integer=True), "width": parse_range(width, "width", integer=True),
        "v_lr": parse_range(v_lr, "v-lr"), "steps": parse_range(steps, "steps", integer=True),
        "clamp": parse_range(clamp, "clamp"), "lam": parse_range(lam, "lam"), "l2": parse_range(l2, "l2"),
    }
    config = TuneConfig.build(fields)
    set_threads(threads)
    tuner = Tuner(config)
    for line in tuner.preflight():
        warn(line)
    dev = tuner.dev
    typer.echo(f"tune {method} on {model}: {dev.plan.n_records} dev records of {data} in batches of {batch_size}, "
               f"up to {trials} trials" + (f" or {timeout:g} min" if timeout else "") +
               (f" ({dev.skipped_overlap} records overlapping {', '.join(config.evaluation)} skipped)"
                if dev.skipped_overlap else ""))
    result = _search_and_write(tuner, config, Path(out))
    _show(result, out)


def _search_and_write(tuner, config, out: Path):
    """The search, with progress lines, and the YAML of its best trial (on Ctrl-C: of the best
    finished so far), under the --out file's lock."""
    import torch

    from ..jobs.tune.search import TuneInterrupted, tune_lock
    from ..jobs.tune.output import trial_line, write_tuned

    dev = tuner.dev
    with tune_lock(out.expanduser()):  # one tune per --out file, until it is written
        try:
            with progress("loading", config.trials, label="tune", console=console) as bar:

                def on_stage(text: str) -> None:
                    bar.update(description=text)

                def on_trial(record, best: int) -> None:
                    bar.print(trial_line(record))
                    bar.update(advance=1, description=f"trials (best so far: {best})")

                result = tuner.run(on_trial=on_trial, on_stage=on_stage)
        except TuneInterrupted as stopped:  # Ctrl-C: keep what the finished trials found
            if stopped.result is not None:
                write_tuned(config, stopped.result, tuner.choice.path, dev, torch.get_num_threads())
                typer.echo(f"interrupted after {len(stopped.result.trials)} trials: the best so far (trial "
                           f"{stopped.result.best}) in {out}")
            raise
        write_tuned(config, result, tuner.choice.path, dev, torch.get_num_threads())
    return result


def _show(result, out: Path) -> None:
    """The best trial, the base setting's score and where the YAML is."""
    from ..jobs.tune.output import trial_line

    best = next(r for r in result.trials if r.number == result.best)
    typer.echo(f"best: trial {best.number} ({trial_line(best).split('|', 1)[0].split(None, 2)[2].strip()}): score "
               f"{best.score:.1f} (efficacy {best.efficacy:.1f}, specificity "
               f"{'-' if best.specificity is None else f'{best.specificity:.1f}'})")
    if result.baseline is not None:
        base = next(r for r in result.trials if r.number == result.baseline)
        typer.echo(f"base settings (trial {base.number}): score {base.score:.1f}" if base.score is not None and
                   base.state != "pruned" else f"base settings (trial {base.number}): {base.state}")
    typer.echo(f"{len(result.trials)} trials in {result.wall_s:.0f} s; hparams in {out} "
               f"(use: editprobe edit --hparams {out} ...)")


def register(app: typer.Typer) -> None:
    app.command("tune")(tune)
