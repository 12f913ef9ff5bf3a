"""What RLEdit's training does to its hypernetwork (docs/rledit.md, "One Adam step"): train on
the built-in ``counterfact-train`` with a named setting and overrides, and print how far the
parameters moved (max |Δθ|, ‖Δθ‖/‖θ‖, the share that moved about a full step, per tensor
group), the step sizes η and ridges λ before and after, the gradient norm each clip saw, and
the trained network's shifts for the first 20 training edits against its initial
parameters' (norm ratio and cosine per module).

    python -m benchmarks.rledit_step [--model smollm2-135m] [--setting reference]
        [--set n_steps=8] [--set back_depth=2] [--json FILE]

Adam's first step moves a parameter by meta_lr · g / (|g| + 1e-8), about ±meta_lr wherever
the gradient is not tiny; the script shows how close to that a setting's training stays.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import yaml


def movement(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], meta_lr: float) -> dict:
    """Movement of the trained parameters (the normalisers' statistics left out)."""
    keys = [k for k in before if ".normalizer." not in k]
    delta = torch.cat([(after[k] - before[k]).flatten().double() for k in keys])
    theta = torch.cat([before[k].flatten().double() for k in keys])
    groups: dict[str, dict] = {}
    for k in keys:
        group = k.split(".")[-2] if k.endswith(".weight") else k.split(".")[-1]  # down, up, bias, scale, lr, ...
        d = (after[k] - before[k]).abs().double().flatten()
        g = groups.setdefault(group, {"n": 0, "max_abs": 0.0, "full_step": 0, "unmoved": 0})
        g["n"] += d.numel()
        g["max_abs"] = max(g["max_abs"], float(d.max()))
        g["full_step"] += int((d >= 0.9 * meta_lr).sum())
        g["unmoved"] += int((d == 0).sum())
    return {"n_params": int(delta.numel()), "max_abs": float(delta.abs().max()),
            "rel_norm": float(delta.norm() / theta.norm()),
            "full_step_share": float((delta.abs() >= 0.9 * meta_lr).double().mean()),
            "unmoved_share": float((delta == 0).double().mean()), "groups": groups}


@torch.no_grad()
def shifts_against_initial(editor, initial: dict[str, torch.Tensor], edits: list[tuple[str, str]]) -> dict:
    """The trained network's shifts for ``edits`` (on the unedited model) against those of its
    initial parameters with the same normalisers: the norm ratio and cosine per module."""
    from editprobe.editing.rledit.cache import keys_and_value_grads, teacher_forced

    hp = editor.hypernet
    trained = {k: v.clone() for k, v in hp.state_dict().items()}
    cached = keys_and_value_grads(editor.model, editor.modules, teacher_forced(editor.tok, edits, editor.device))
    now = {n: hp.shift(n, k, g) for n, (k, g) in cached.items()}
    hp.load_state_dict({k: (trained[k] if ".normalizer." in k else v) for k, v in initial.items()})
    then = {n: hp.shift(n, k, g) for n, (k, g) in cached.items()}
    hp.load_state_dict(trained)
    ratio = [float(now[n].norm() / then[n].norm()) for n in now]
    cosine = [float(torch.nn.functional.cosine_similarity(now[n].flatten(), then[n].flatten(), 0)) for n in now]
    return {"norm_ratio": [min(ratio), max(ratio)], "cosine": [min(cosine), max(cosine)]}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.rledit_step")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--setting", default="reference")
    ap.add_argument("--set", dest="sets", action="append", default=[], help="key=value (YAML value)")
    ap.add_argument("--data", default="counterfact-train")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from editprobe.data import load_records
    from editprobe.editing.settings.model_keys import hparams_key
    from editprobe.editing.rledit import (Hypernetwork, RLEditEditor, TrainingRun, edit_modules,
                                          examples_from_records, module_shapes, loop as training)
    from editprobe.editing.rledit.hypernet import resolve_settings
    from editprobe.models import load_model

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.sets)}
    settings = resolve_settings(hparams_key(args.model), args.setting, overrides)
    loaded = load_model(args.model)
    shapes = module_shapes(edit_modules(loaded.model, loaded.adapter, settings))
    editor = RLEditEditor(loaded.model, loaded.tokenizer, Hypernetwork(settings, shapes))
    records = load_records(args.data).records[: settings.n_steps * settings.batch_size]
    norms: list[float] = []
    clip = training.clip_grad_norm_

    def recording_clip(params, max_norm):  # the norm each clip saw, before clipping
        norms.append(float(clip(params, max_norm)))

    training.clip_grad_norm_ = recording_clip
    before = {k: v.detach().clone() for k, v in editor.hypernet.state_dict().items()}
    started = time.perf_counter()
    examples = examples_from_records(records)
    history = TrainingRun(editor, examples).run(
        on_step=lambda t, total, s: print(f"step {t}/{total}: loss {s['loss']:.3f}", flush=True))
    after = {k: v.detach().clone() for k, v in editor.hypernet.state_dict().items()}
    result = {"model": args.model, "setting": args.setting, "settings": settings.model_dump(mode="json"),
              "threads": torch.get_num_threads(), "seconds": round(time.perf_counter() - started, 1),
              "clip_norms": norms, "losses": [h["loss"] for h in history],
              "movement": movement(before, after, settings.meta_lr),
              "shifts_vs_initial": shifts_against_initial(editor, before, [e.edit for e in examples[:20]]),
              "eta": {"before": per_module(before), "after": per_module(after)},
              "log_ridge": {"before": per_module(before, "log_ridge"), "after": per_module(after, "log_ridge")}}
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


def per_module(state: dict[str, torch.Tensor], name: str = "lr") -> list[float]:
    """Every module's η (``lr``) or λ (``log_ridge``)."""
    return [float(x) for k, v in state.items() if k.endswith(f".{name}.weight") for x in v.flatten()]


if __name__ == "__main__":
    main()
