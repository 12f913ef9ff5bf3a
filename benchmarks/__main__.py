"""`make bench`: speed figures measured side by side in one run."""

from __future__ import annotations

import argparse
import json

from . import target_opt


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=20, help="requests (100 on a GPU)")
    ap.add_argument("--layer", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--device", default=None)
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--json", default=None, help="also write the figures to this file")
    args = ap.parse_args()
    result = target_opt.run(args.model, args.n, args.layer, args.steps, device=args.device, dtype=args.dtype)
    target_opt.print_report(result)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
