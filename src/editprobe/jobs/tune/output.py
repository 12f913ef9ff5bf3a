"""The YAML ``editprobe tune`` writes: an ordinary hparams file of the method (the base
file's fields with the best trial's values; ``edit --hparams FILE`` reads it) whose
evidence — command, date, data, seed, objective, every trial's scores — is written as
comments, so the schema (which forbids unknown keys) stays as it is."""

from __future__ import annotations

import datetime as dt
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from ...yamlio import load_yaml
from .search import PRUNER, TUNED_HEADER, TrialRecord, TuneConfig, TuneResult

SHORT = {"mom2_update_weight": "lambda", "clamp_norm_factor": "clamp", "v_num_grad_steps": "steps"}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def _fields_text(fields: dict[str, Any]) -> str:
    layers = fields.get("layers", [])
    window = f"layers {layers[0]}-{layers[-1]}" if layers else "layers -"
    rest = " ".join(f"{SHORT.get(k, k)} {v:g}" for k, v in fields.items() if k != "layers")
    return f"{window} {rest}"


def trial_line(r: TrialRecord) -> str:
    """One trial, as the evidence block and the progress lines show it."""
    return (f"{r.number:>3} {r.state:<8} {_fields_text(r.fields)} | batches {r.batches} | eff {_pct(r.efficacy)} "
            f"spec {_pct(r.specificity)} score {_pct(r.score)} | PN {_pct(r.PN)} NN {_pct(r.NN)} NP {_pct(r.NP)} "
            f"Avg {_pct(r.avg)} | {r.seconds:.0f} s" + (f" | {r.note}" if r.note else ""))


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "unknown"


def tuned_yaml(config: TuneConfig, result: TuneResult, base_path: Path, dev, threads: int) -> str:
    """The file's text: evidence comments, then the hparams fields."""
    base_raw = load_yaml(Path(base_path)) or {}
    by_number = {r.number: r for r in result.trials}
    best = by_number[result.best]
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    space = result.space
    fields = {**base_raw, **config.overrides, **result.seeded, **best.fields}
    fields["method"] = config.method
    stopped = " (interrupted)" if result.interrupted else ""
    fields["source"] = (f"editprobe tune {date[:10]}: best of {len(result.trials)} trials{stopped} on "
                        f"{dev.plan.n_records} records of {config.data} (seed {config.seed}); base {base_path.name}")
    order = ["method", "source"] + [k for k in fields if k not in ("method", "source")]
    body = yaml.safe_dump({k: fields[k] for k in order}, sort_keys=False, default_flow_style=None, width=120)

    solve = f"; {SHORT.get(space.solve_name, space.solve_name)} {space.solve[0]:g}..{space.solve[1]:g} (log)" \
        if space.solve_name and space.solve else ""
    base_trial = by_number.get(result.baseline) if result.baseline is not None else None
    lines = [
        f"{TUNED_HEADER[2:]} on {date} (editprobe {_version('editprobe')}, optuna {_version('optuna')}, "
        f"torch threads {threads}).",
        f"Command: {config.command()}",
        f"Model: {config.model}; method: {config.method}; base settings: {base_path.name}.",
        f"Dev data: {dev.path} (sha256 {dev.sha256[:16]}, {dev.n_in_file} entries): the first {dev.plan.n_records} "
        f"records ids {dev.plan.items[0].record.id}..{dev.plan.items[-1].record.id} disjoint from "
        f"{', '.join(config.evaluation)} (subject and prompt), {dev.skipped_overlap} overlapping and "
        f"{dev.skipped_unnegatable} unnegatable records skipped; edited in sequential batches of {config.batch_size}.",
        "Objective: harmonic mean of efficacy (PP exact match) and neighbourhood specificity (the unedited "
        "model's continuation kept), % of the dev records; PN, NN, NP and the Avg discrepancy are recorded, not "
        "optimized.",
        f"Search: TPE (seed {config.seed}), {PRUNER} after each dev batch; window of layers within "
        f"{space.layers[0]}..{space.layers[1]} (C0 of all computed once, {result.c0_s:.0f} s), width "
        f"{space.width[0]}..{space.width[1]}; v_lr {space.v_lr[0]:g}..{space.v_lr[1]:g} (log); steps "
        f"{space.steps[0]}..{space.steps[1]}; clamp {space.clamp[0]:g}..{space.clamp[1]:g} (log){solve}.",
        f"Result: trial {best.number}: score {_pct(best.score)} (efficacy {_pct(best.efficacy)}, specificity "
        f"{_pct(best.specificity)}, PN {_pct(best.PN)}, Avg {_pct(best.avg)}).",
        (f"Base settings (trial {base_trial.number}): score {_pct(base_trial.score)} (efficacy "
         f"{_pct(base_trial.efficacy)}, specificity {_pct(base_trial.specificity)}, PN {_pct(base_trial.PN)}, "
         f"Avg {_pct(base_trial.avg)}); {base_trial.state}.") if base_trial is not None else
        f"Base settings not tried: {result.baseline_note}.",
        f"Wall time: {result.wall_s:.0f} s ({len(result.trials)} trials).",
        *([f"Interrupted (Ctrl-C) after {len(result.trials)} finished trials of up to {config.trials}: this is the "
           "best so far; the trial running then is not listed."] if result.interrupted else []),
        "Trials (number, state, setting | dev batches edited | efficacy, specificity, score | negation | seconds):",
        *(f"  {trial_line(r)}" for r in result.trials),
    ]
    return "".join(f"# {line}\n" for line in lines) + body


def write_tuned(config: TuneConfig, result: TuneResult, base_path: Path, dev, threads: int) -> str:
    """Write the YAML atomically, after checking that it loads as the method's hparams."""
    from ...editing.settings.hparams import load_hparams_file
    from ...editing.registry import method_class
    from ...paths import atomic_path

    text = tuned_yaml(config, result, base_path, dev, threads)
    with atomic_path(Path(config.out).expanduser()) as tmp:
        tmp.write_text(text, encoding="utf-8")
        load_hparams_file(tmp, method_class(config.method).hparams_cls)  # a file edit would refuse is never written
    return text
