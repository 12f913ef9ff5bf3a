"""Evidence for the built-in model's edit layers: MEMIT exact-match efficacy on built-in
CounterFact records for windows of consecutive layers ending at different critical layers.

    python -m benchmarks.layer_sweep --n 12 --ends 4 7 10 13 16 --width 3

Prints one row per window (efficacy before/after, mean target probability, seconds); the
result is recorded in src/editprobe/editing/settings/hparams/memit/smollm2-135m.yaml.
"""

from __future__ import annotations

import argparse
import statistics
import time

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.models import load_model
from editprobe.probes.exact import exact_match_batch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=12)
    ap.add_argument("--ends", type=int, nargs="+", default=[4, 7, 10, 13, 16])
    ap.add_argument("--width", type=int, default=3)
    ap.add_argument("--method", default="memit")
    ap.add_argument("--set", nargs="*", default=[], help="hparam overrides key=value (YAML values)")
    args = ap.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    model, tok, adapter = load_model(args.model)
    records = load_records("counterfact-sample").records[: args.n]
    requests = [r.request() for r in records]
    print(f"{'layers':<16} {'before':>7} {'after':>7} {'mean p(z)':>9} {'steps':>6} {'seconds':>8}")
    for end in args.ends:
        layers = list(range(end - args.width + 1, end + 1))
        editor = make_editor(args.method, model, tok, args.model, overrides={**overrides, "layers": layers})
        before = exact_match_batch(model, tok, [(r.query, r.target) for r in requests])
        t = time.perf_counter()
        report = editor.apply(requests)
        seconds = time.perf_counter() - t
        after = exact_match_batch(model, tok, [(r.query, r.target) for r in requests])
        editor.restore()
        print(
            f"{str(layers):<16} {100 * sum(before) / len(before):7.1f} {100 * sum(after) / len(after):7.1f} "
            f"{statistics.mean(r.target_prob for r in report.requests):9.3f} "
            f"{statistics.mean(r.steps for r in report.requests):6.1f} {seconds:8.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
