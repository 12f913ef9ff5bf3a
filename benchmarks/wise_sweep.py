"""The sweep behind WISE's SmolLM2 settings: a small grid over the edit layer, the learning rate
and the routing margins, on tuning records disjoint from the evaluated ones.

    python -m benchmarks.wise_sweep --n 40 --batch-size 10            # GPU: a few minutes
    python -m benchmarks.wise_sweep --n 8 --batch-size 4 --grid small # CPU smoke

Edits: the first ``--n`` records of the built-in counterfact-train (never the evaluated
counterfact-sample: the file shares no subject or prompt with it); irrelevant prompts: its
records 1000-2000 (``irrelevant_range``), disjoint from those. Per setting, after all batches
(sequential, edits accumulating): efficacy (exact match of the new target), locality (the
unedited model's greedy next token kept on the records' locality prompts) and the share of
held-out prompts (records 500-600, neither edited nor trained on) whose last token routes to a
side memory. Pick the setting with the best efficacy whose locality and false routing stay
low, and record it in src/editprobe/editing/settings/hparams/wise/smollm2-135m.yaml.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.models import load_model
from editprobe.models.tokens import encode_open
from editprobe.probes.exact import exact_match_batch

GRIDS = {
    "full": {"layer": [21, 24, 27], "edit_lr": [0.5, 0.9], "act_margin": [[2.0, 20.0, 10.0], [1.0, 10.0, 5.0],
                                                                          [5.0, 40.0, 20.0]]},
    # what a 2-core CPU affords: the depth and the margins, at EasyEdit's learning rate
    "cpu": {"layer": [18, 23, 27], "edit_lr": [0.9], "act_margin": [[2.0, 20.0, 10.0], [5.0, 40.0, 20.0]]},
    "small": {"layer": [27], "edit_lr": [0.9], "act_margin": [[2.0, 20.0, 10.0]]},
    "shipped": {},  # the model's settings file as it is (with --set overrides)
}


IRRELEVANT_RANGE = (1000, 2000)  # counterfact-train's records the margins' irrelevant prompts come from


def tuning_edits(records, n: int) -> list:
    """The first ``n`` of counterfact-train's records 0-500 whose subject no irrelevant prompt
    shares (WISE refuses an overlap)."""
    irrelevant = {r.subject.strip().lower() for r in records[slice(*IRRELEVANT_RANGE)]}
    return [r for r in records[:500] if r.subject.strip().lower() not in irrelevant][:n]


@torch.no_grad()
def next_tokens(model, tok, prompts: list[str]) -> list[int]:
    device = next(model.parameters()).device
    return [int(model(input_ids=torch.tensor([encode_open(tok, p)], device=device)).logits[0, -1].argmax())
            for p in prompts]


@torch.no_grad()
def routed_share(model, tok, editor, prompts: list[str]) -> float:
    device = next(model.parameters()).device
    hits = 0
    for p in prompts:
        model(input_ids=torch.tensor([encode_open(tok, p)], device=device))
        routes = editor.router.last_routes
        hits += int(routes is not None and bool(routes[0, -1] >= 0))
    return hits / len(prompts)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.wise_sweep")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="full")
    ap.add_argument("--set", nargs="*", default=[], help="further hparam overrides key=value (YAML values)")
    args = ap.parse_args()
    import yaml

    overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    model, tok, _ = load_model(args.model)
    records = load_records("counterfact-train").records
    edits = tuning_edits(records, args.n)
    held_out = records[500:600]
    requests = [r.request() for r in edits]
    local = [n.prompt for r in edits for n in r.neighborhood[:1]]
    local_before = next_tokens(model, tok, local)
    unrelated = [r.query for r in held_out]
    grid = GRIDS[args.grid]
    print(f"{'layer':>5} {'lr':>5} {'margins':<18} {'efficacy':>8} {'locality':>8} {'routed':>7} {'mem':>4} {'s':>6}")
    axes = ("layer", "edit_lr", "act_margin")
    for values in itertools.product(*(grid.get(k, [None]) for k in axes)):
        chosen = {k: v for k, v in zip(axes, values) if v is not None}
        settings = {**overrides, **chosen, "irrelevant_range": list(IRRELEVANT_RANGE)}
        editor = make_editor("wise", model, tok, args.model, overrides=settings)
        layer, lr, margin = editor.hp.layer, editor.hp.edit_lr, list(editor.hp.act_margin)
        t = time.perf_counter()
        for start in range(0, len(requests), args.batch_size):
            editor.apply(requests[start : start + args.batch_size])
        seconds = time.perf_counter() - t
        efficacy = sum(exact_match_batch(model, tok, [(r.query, r.target) for r in requests])) / len(requests)
        kept = sum(a == b for a, b in zip(next_tokens(model, tok, local), local_before)) / max(1, len(local))
        routed = routed_share(model, tok, editor, unrelated)
        print(f"{layer:>5} {lr:>5} {str(margin):<18} {100 * efficacy:8.1f} {100 * kept:8.1f} {100 * routed:7.1f} "
              f"{len(editor.memory_summary()):>4} {seconds:6.1f}", flush=True)
        editor.restore()


if __name__ == "__main__":
    main()
