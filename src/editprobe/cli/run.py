"""`editprobe run`: the experiment of docs/protocol.md#experimental-protocol, checkpointed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .common import (
    MquakeUnitChoice, OnBadRecordChoice, ZsreTargetChoice, fail, max_prompt_tokens_option, mquake_unit_option,
    on_bad_record_option, parse_overrides, set_threads, warn, zsre_target_option)

console = Console()


def run(
    config: Optional[Path] = typer.Option(None, "--config", help="run config YAML (flags override its fields)"),
    model: Optional[str] = typer.Option(None, help="built-in name, local directory or hub id"),
    method: list[str] = typer.Option([], "--method", help="editing method; repeat for several"),
    data: list[str] = typer.Option([], "--data", help="dataset file or built-in name; repeat for several"),
    n: Optional[int] = typer.Option(None, help="records per dataset (paper: 2000)"),
    sample: Optional[int] = typer.Option(None, help="draw this many of the first n records by --seed (and their "
                                                    "order) instead of taking the first n"),
    batch_size: Optional[int] = typer.Option(None, help="requests per sequential batch (paper: 100)"),
    preserve_previous: Optional[bool] = typer.Option(None, "--preserve-previous/--no-preserve-previous",
                                                     help="keep earlier batches' keys in the solve (Table 6 switch)"),
    seed: Optional[int] = typer.Option(None, help="seed of every batch, of the context templates (0: the method's "
                                                  "template_seed) and of --sample"),
    out: Optional[Path] = typer.Option(None, help="run directory (new, or the one to --resume)"),
    hparams: Optional[str] = typer.Option(None, help="hparams model key, YAML, or a folder of <method>.yaml files "
                                                     "(default: the model's shipped key)"),
    profile: Optional[str] = typer.Option(
        None, help="hparams profile: paper (the paper's text, float32) or paper-code (its code's values, bfloat16)"),
    set_: list[str] = typer.Option([], "--set", help="override one hparam: key=value (YAML value)"),
    negation_table: Optional[str] = typer.Option(None, help="user YAML 'template: negated template'"),
    probe: list[str] = typer.Option([], "--probe", help="a probe to measure (name or module:attribute); repeat for "
                                                        "several (default: every default probe, where it applies)"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
    checkpoint_every: Optional[int] = typer.Option(None, help="checkpoint after every k-th batch (default 1)"),
    eval_every: Optional[int] = typer.Option(None, "--eval-every", help="also evaluate after every K batches of each "
                                                                       "editing stage: the curve over edits"),
    resume: bool = typer.Option(False, "--resume", help="continue the unfinished run in --out"),
    target_cache: Optional[bool] = typer.Option(None, "--target-cache/--no-target-cache",
                                                help="reuse target vectors optimized before on the same model state "
                                                     "and settings (default: on)"),
    max_prompt_tokens: Optional[int] = max_prompt_tokens_option(),
    on_bad_record: Optional[OnBadRecordChoice] = on_bad_record_option(),
    zsre_target: Optional[ZsreTargetChoice] = zsre_target_option(),
    mquake_unit: Optional[MquakeUnitChoice] = mquake_unit_option(),
    save_model: Optional[bool] = typer.Option(None, "--save-model/--no-save-model",
                                              help="save each method's positively edited model as a Hugging Face "
                                                   "checkpoint in OUT/models/<dataset>__<method>/"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads (numbers can depend on it)"),
) -> None:
    """Edit and evaluate: no-edit baseline, positive and negated editing runs, fact-checking."""
    from ..runs import Experiment, RunConfig, RunDir, RunPlan
    from ..runs.config import read_config_file

    flags = {"model": model, "methods": tuple(method) or None, "datasets": tuple(data) or None, "n": n, "sample": sample,
             "batch_size": batch_size, "preserve_previous": preserve_previous, "seed": seed, "out": out,
             "hparams": hparams, "profile": profile, "negation_table": negation_table, "dtype": dtype, "device": device,
             "checkpoint_every": checkpoint_every, "probes": tuple(probe) or None, "target_cache": target_cache,
             "max_prompt_tokens": max_prompt_tokens, "on_bad_record": on_bad_record.value if on_bad_record else None,
             "zsre_target": zsre_target.value if zsre_target else None,
             "mquake_unit": mquake_unit.value if mquake_unit else None,
             "eval_every": eval_every, "eval": "every" if eval_every is not None else None, "save_model": save_model}
    if out is None and (config is None or "out" not in read_config_file(config)):
        fail("--out is required (or 'out:' in the config)")
    base = None
    if resume and config is None:  # the run's own saved config, unless the user restates one
        base = RunDir(out).saved_fields()
    cfg = RunConfig.from_sources(config, flags, parse_overrides(set_), base=base)
    set_threads(threads)
    experiment = Experiment(RunPlan.build(cfg))
    for line in experiment.preflight(resume):
        warn(line)
    try:
        summary = experiment.run(resume=resume)
    except KeyboardInterrupt:  # Ctrl-C: say where the saved work is (main prints the error line)
        if RunDir(cfg.out).has_work:
            typer.echo(f"interrupted: the work done is kept in {cfg.out}; editprobe run --out {cfg.out} --resume "
                       "continues it")
        raise
    for r in summary.results:
        typer.echo(result_line(r))
    typer.echo(f"results in {cfg.out} (summary.json, samples.jsonl); tables: editprobe report {cfg.out}")


def _metric(metric) -> str:
    """A metric as every output shows it: ``97.0 [93.1, 99.4]`` (docs/statistics.md)."""
    from ..probes.intervals import shown

    return "–" if metric is None else shown(metric.value, metric.lo, metric.hi, "{}")


def result_line(r) -> str:
    """One line per method and dataset: the negation row, fact-checking, the classic metrics."""
    parts = [f"{r.dataset} {r.method}:"]
    if "negation" in r.probes:
        neg = r.probes["negation"].metrics
        parts.append(" ".join(f"{k} {_metric(neg.get(k))}" for k in ("PP", "PN", "NN", "NP", "Avg")))
        # Leakage among the successful edits, with its n (docs/protocol.md), where the run has it.
        parts += [f"{k} {_metric(neg[k])} (n={neg[k].n})" for k in ("PN|PP", "NP|NN") if neg.get(k) is not None]
    if "factcheck" in r.probes:
        fc = r.probes["factcheck"]
        n = fc.metrics["Acc"].n if "Acc" in fc.metrics else None
        parts.append(f"| fact-check Eff {_metric(fc.metrics.get('Eff'))} Acc {_metric(fc.metrics.get('Acc'))} (n={n})")
    classic = [f"{name} {key} {_metric(m)}" for name, o in r.probes.items() if o.table == "classic"
               for key, m in o.metrics.items()]
    if classic:
        parts.append("| " + ", ".join(classic))
    return " ".join(parts)


def register(app: typer.Typer) -> None:
    app.command("run")(run)
