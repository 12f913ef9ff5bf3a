"""Evidence for GRACE's shipped layer and deferral radius (docs/grace.md, Settings): on the
built-in TRAINING records (counterfact-train, disjoint from every evaluated sample), how often
a query falls inside the radius ε of its edit's key, per layer and ε.

    python -m benchmarks.grace_sweep --n 40 --layers 12 18 22 25 27 --eps 1 2 4 8 16 32
    python -m benchmarks.grace_sweep --n 20 --layers 22 25 --eps 2 8 --edit   # also edit and score

A GRACE value is trained until it gives the target, so whether a query gets the edit is
decided by routing: its module input (the MLP output projection's, at that layer) within ε
of the key. Per layer and ε, the share of records whose

- ``para``: paraphrase prompt's last token hits the edit's key (generalization, wanted);
- ``neg``:  negated query's last token hits it (the negation probe's PN shortcut, unwanted);
- ``neigh``: neighbourhood prompt's (another subject, same relation) last token hits it
  (locality breach, unwanted);
- ``other``: another record's edit prompt hits it (edits colliding: splits).

``--edit`` also edits the records with GRACE (one batch, the shipped settings with the
layer and ε swept) and prints exact-match efficacy, paraphrase and negated-query success
and neighbourhood exact-match accuracy before/after. One thread by default: it shares the machine.
"""

from __future__ import annotations

import argparse
import time

import torch

from editprobe.data import load_records
from editprobe.data.negation import negate, negated_query
from editprobe.editing import make_editor
from editprobe.models import load_model
from editprobe.models.tokens import encode_open, make_batch
from editprobe.probes.exact import exact_match_batch


@torch.no_grad()
def last_token_inputs(model, tok, module, prompts: list[str], batch_size: int = 16) -> torch.Tensor:
    """The module's input at each prompt's last token (fp32), as GRACE reads a key."""
    out = []
    device = next(model.parameters()).device
    for start in range(0, len(prompts), batch_size):
        ids = [encode_open(tok, p) for p in prompts[start:start + batch_size]]
        batch = make_batch(tok, ids, "right").to(device)
        seen = {}
        handle = module.register_forward_pre_hook(lambda _m, args: seen.__setitem__("x", args[0]))
        try:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False)
        finally:
            handle.remove()
        rows = torch.arange(len(ids), device=device)
        out.append(seen["x"][rows, torch.tensor([len(i) - 1 for i in ids], device=device)].float())
    return torch.cat(out)


def probe_sets(records):
    """Per record: its edit prompt, first paraphrase, negated query and first neighbour (or None)."""
    sets = []
    for r in records:
        negation = negate(r.template, r.relation_id)
        sets.append({"edit": r.query, "para": r.paraphrase_prompts[0] if r.paraphrase_prompts else None,
                     "neg": negated_query(negation, r.subject) if negation.ok else None,
                     "neigh": r.neighborhood[0].prompt if r.neighborhood else None})
    return sets


def hit_rates(model, tok, module, sets, eps_values) -> tuple[dict[float, dict[str, float]], dict[str, float]]:
    keys = last_token_inputs(model, tok, module, [s["edit"] for s in sets])
    dists: dict[str, list[float]] = {}
    for kind in ("para", "neg", "neigh"):
        idx = [i for i, s in enumerate(sets) if s[kind]]
        x = last_token_inputs(model, tok, module, [sets[i][kind] for i in idx])
        dists[kind] = torch.linalg.vector_norm(x - keys[idx], dim=1).tolist()
    cross = torch.cdist(keys, keys).fill_diagonal_(float("inf"))
    dists["other"] = cross.min(1).values.tolist()
    dists["median"] = [float(keys.norm(dim=1).median())]
    return {eps: {k: 100 * sum(d <= eps for d in v) / max(len(v), 1) for k, v in dists.items() if k != "median"}
            for eps in eps_values}, {k: sorted(v)[len(v) // 2] for k, v in dists.items()}


def edit_scores(model, tok, model_key, records, sets, layer, eps) -> dict[str, float]:
    requests = [r.request() for r in records]
    neighbours = [(r.neighborhood[0].prompt, r.neighborhood[0].answer) for r in records if r.neighborhood]
    scored = {"neigh_acc_before": exact_match_batch(model, tok, neighbours)}
    editor = make_editor("grace", model, tok, model_key, overrides={"layer": layer, "eps": eps})
    editor.apply(requests)
    try:
        scored["efficacy"] = exact_match_batch(model, tok, [(r.query, r.target) for r in requests])
        for kind in ("para", "neg"):
            pairs = [(s[kind], r.target) for s, r in zip(sets, requests) if s[kind]]
            scored[kind] = exact_match_batch(model, tok, pairs)
        scored["neigh_acc"] = exact_match_batch(model, tok, neighbours)
    finally:
        editor.restore()
    return {k: 100 * sum(v) / max(len(v), 1) for k, v in scored.items()}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.grace_sweep")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--n", type=int, default=40, help="counterfact-train records (never evaluated ones)")
    ap.add_argument("--layers", type=int, nargs="+", default=[12, 18, 22, 25, 27])
    ap.add_argument("--eps", type=float, nargs="+", default=[1, 2, 4, 8, 16, 32])
    ap.add_argument("--edit", action="store_true", help="also edit with GRACE and score (slower)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok, adapter = load_model(args.model)
    records = load_records("counterfact-train", limit=args.n).records
    sets = probe_sets(records)
    print(f"{args.n} counterfact-train records; hits = % of records whose query is within eps of its edit's key")
    print(f"{'layer':>5} {'eps':>6} {'para':>6} {'neg':>6} {'neigh':>6} {'other':>6}   median distances")
    for layer in args.layers:
        module = model.get_submodule(adapter.path("mlp_out", layer))
        rates, medians = hit_rates(model, tok, module, sets, args.eps)
        for eps, r in rates.items():
            print(f"{layer:>5} {eps:>6g} {r['para']:6.1f} {r['neg']:6.1f} {r['neigh']:6.1f} {r['other']:6.1f}   "
                  + " ".join(f"{k}={v:.2f}" for k, v in medians.items()), flush=True)
            if args.edit:
                t = time.perf_counter()
                s = edit_scores(model, tok, args.model, records, sets, layer, eps)
                print("      edit: " + " ".join(f"{k}={v:.1f}" for k, v in s.items())
                      + f"  ({time.perf_counter() - t:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
