"""`make bench`: every stage's speed against its floor, measured side by side in one run,
printed as one table of ratios (benchmarks/table.py); ``--json`` keeps the record.

Stages: target optimization (vs the per-request full-model loop, and vs its arithmetic at
the measured matmul peak), evaluation (vs one batched forward over the same prompts), C0
(vs a bare truncated forward over the same tokens), a whole edit batch (vs the sum of its
parts' floors), the metrics' intervals (vs the textbook bootstrap; no model), the shortcut
battery (vs the run's other probes on the same records; goal: at most 30 %). ``--only`` runs a
subset.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

STAGES = ("target", "evaluation", "c0", "batch", "intervals", "battery")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=20, help="requests of the target and batch stages (100 on a GPU)")
    ap.add_argument("--eval-n", type=int, default=40, help="records of the evaluation stage")
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--only", nargs="+", choices=STAGES, default=list(STAGES))
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()

    from editprobe.models import load_model

    from . import batch, battery, c0, evaluation, intervals, target_opt
    from .table import format_table

    started = time.perf_counter()
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    rows, record = [], {"model": args.model, "threads": torch.get_num_threads(), "stages": {}}
    target = None
    if "target" in args.only or "batch" in args.only:
        target = target_opt.run(args.model, args.n, args.layer, args.steps, loaded=loaded)
        target_opt.print_report(target)
        record["stages"]["target"] = target
        if "target" in args.only:
            rows += target_opt.ratio_rows(target)
    if "evaluation" in args.only:
        rows += evaluation.run(loaded, n=args.eval_n)
    if "c0" in args.only:
        rows += c0.run(loaded)
    if "batch" in args.only:
        floor = target_opt.ratio_rows(target)[1].floor_s / args.n
        rows += batch.run(loaded, floor, n=args.n, model_id=args.model)
    if "intervals" in args.only:
        rows += intervals.run()
    if "battery" in args.only:
        rows += battery.run(loaded, n=args.eval_n)
    print()
    print(format_table(rows))
    print(f"(one run, {torch.get_num_threads()} threads, {time.perf_counter() - started:.0f} s)")
    record["ratios"] = [r.as_dict() for r in rows]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(record, fh, indent=2)


if __name__ == "__main__":
    main()
