"""Does WISE keep its edits? Per edit, on SmolLM2, the target probability right after the edit
is trained, after all ``--n`` edits through the router, and after all with every memory forced
on (thresholds off): a low last column with a high first one is forgetting inside the side
memory, a low middle one with a high last one is routing.

    python -m benchmarks.wise_retention --n 10                                  # shipped settings
    python -m benchmarks.wise_retention --n 10 --set save_freq=1 merge_freq=5   # other sharding

Edits: counterfact-train records (never the evaluated counterfact-sample), one per batch in
order; irrelevant prompts: its records 1000-2000, disjoint from them (as benchmarks/wise_sweep.py).
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.models import load_model
from editprobe.models.tokens import continuation_ids, encode_open

from .wise_sweep import IRRELEVANT_RANGE, tuning_edits


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wise_retention")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=10)
    ap.add_argument("--set", nargs="*", default=[], help="hparam overrides key=value (YAML values)")
    args = ap.parse_args()
    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    model, tok, _ = load_model(args.model)
    requests = [r.request() for r in tuning_edits(load_records("counterfact-train").records, args.n)]
    editor = make_editor("wise", model, tok, args.model,
                         overrides={"irrelevant_range": list(IRRELEVANT_RANGE), **overrides})

    @torch.no_grad()
    def target_prob(req) -> tuple[float, bool]:
        q, t = encode_open(tok, req.query), continuation_ids(tok, req.query, req.target)
        logp = model(input_ids=torch.tensor([q + t[:-1]])).logits[0, len(q) - 1:].float().log_softmax(-1)
        routed = bool(editor.router.last_routes[0, len(q) - 1] >= 0)
        return float(logp[torch.arange(len(t)), torch.tensor(t)].mean().exp()), routed

    start = time.perf_counter()
    own = []
    for req in requests:
        editor.apply([req])
        own.append(target_prob(req))
    end = [target_prob(req) for req in requests]
    editor.router._thresholds = [-1.0] * len(editor.router.memories)  # every memory on: a diagnostic only
    forced = [target_prob(req)[0] for req in requests]
    print(f"settings {overrides or 'shipped'}; {len(editor.memory_summary())} memories; "
          f"{time.perf_counter() - start:.0f} s")
    for name, probs in (("after its own training", [p for p, _ in own]), ("after all, routed", [p for p, _ in end]),
                        ("after all, memories forced on", forced)):
        print(f"{name:<31} mean {sum(probs) / len(probs):.2f}  > 0.5: {sum(p > 0.5 for p in probs)}/{len(probs)}  "
              + " ".join(f"{p:.2f}" for p in probs))
    print(f"edit queries routed to a side memory at the end: {sum(r for _, r in end)}/{len(end)}")


if __name__ == "__main__":
    main()
