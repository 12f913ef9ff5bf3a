"""All ten LTE methods on the built-in model: sequential batches of built-in CounterFact
records, PP exact-match efficacy before/after and seconds per batch, one method after the
other on one loaded model (each starts from the original weights).

    python -m benchmarks.family --n 50 --batch-size 25 --json family.json

Statistics are computed once per layer set and shared through the covariance cache.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.editing.registry import lte_methods
from editprobe.models import load_model
from editprobe.probes.exact import exact_match_batch


def run_method(method: str, loaded, requests, batch_size: int, model_id: str, overrides: dict | None = None) -> dict:
    pairs = [(r.query, r.target) for r in requests]
    before = exact_match_batch(loaded.model, loaded.tokenizer, pairs)
    editor = make_editor(method, loaded.model, loaded.tokenizer, model_id, overrides=overrides, model_id=model_id)
    batch_seconds = []
    for start in range(0, len(requests), batch_size):
        t = time.perf_counter()
        editor.apply(requests[start : start + batch_size])
        batch_seconds.append(time.perf_counter() - t)
    t = time.perf_counter()
    editor.finalize()
    finalize_s = time.perf_counter() - t
    after = exact_match_batch(loaded.model, loaded.tokenizer, pairs)
    editor.restore()
    return {
        "method": method, "overrides": overrides or {}, "n": len(requests), "batch_size": batch_size,
        "efficacy_before": 100 * sum(before) / len(before), "efficacy_after": 100 * sum(after) / len(after),
        "failed": [i for i, ok in enumerate(after) if not ok],
        "batch_seconds": batch_seconds, "finalize_s": finalize_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=25)
    ap.add_argument("--methods", nargs="*", default=lte_methods())
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--json", default=None)
    ap.add_argument("--set", nargs="*", default=[], help="hparam overrides for every method, key=value (YAML)")
    args = ap.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    torch.manual_seed(0)
    loaded = load_model(args.model, device=args.device, dtype=args.dtype)
    requests = [r.request() for r in load_records("counterfact-sample", limit=args.n).records]
    print(f"{'method':<10} {'before':>7} {'after':>7}  seconds per batch", flush=True)
    rows = []
    for method in args.methods:
        row = run_method(method, loaded, requests, args.batch_size, args.model, overrides)
        rows.append(row)
        per_batch = " ".join(f"{s:7.1f}" for s in row["batch_seconds"])
        print(f"{method:<10} {row['efficacy_before']:7.1f} {row['efficacy_after']:7.1f}  {per_batch}", flush=True)
        if args.json:  # rewritten after each method so a long run leaves partial results
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
