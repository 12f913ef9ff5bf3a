"""Real-size checks on a GPU, where the weights cannot travel: random models with real
architectures (SmolLM2-135M's config and tokenizer; a Llama-3-8B-shaped model in bf16).

    python -m benchmarks.device_check CONFIG_DIR [--small]

1. the target-optimization benchmark (engine vs per-request full-model loop), 100 requests,
   every step run (early stop off: random weights never converge, and equal work is what a
   timing comparison needs);
2. each requested method (default: all ten) on the 8B-shaped bf16 model: covariance,
   projector, two batches, timings, finiteness, only the edit layers written, bf16 kept,
   restore exact. Random weights: efficacy is meaningless here, only the machinery is checked.

    python -m benchmarks.device_check CONFIG_DIR --skip-bench --methods rome memit ...
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.editing.lte.covariance import CovarianceStore
from editprobe.editing.registry import lte_methods
from editprobe.models.adapters import get_adapter
from editprobe.models.loading import LoadedModel, prepare_tokenizer

from . import target_opt


def _random_model(config, dtype, device):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def main() -> None:
    from transformers import AutoConfig, AutoTokenizer, LlamaConfig

    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--small", action="store_true", help="tiny shapes on CPU (a dry run of this script)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--skip-bench", action="store_true", help="only the 8B-shaped method checks")
    ap.add_argument("--methods", nargs="*", default=lte_methods())
    ap.add_argument("--batch", type=int, default=20, help="requests per batch (two batches)")
    ap.add_argument("--steps", type=int, default=10, help="target-optimization steps")
    ap.add_argument("--set", nargs="*", default=[], help="hparam overrides for every method, key=value (YAML)")
    args = ap.parse_args()
    device = "cpu" if args.small else "cuda"
    out = os.environ.get("OUT", "/tmp")
    tok = AutoTokenizer.from_pretrained(args.config_dir)
    prepare_tokenizer(tok)
    figures: dict = {}

    cfg = AutoConfig.from_pretrained(args.config_dir)
    if args.small and not args.skip_bench:
        cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size = 10, 64, 128
        cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim = 4, 2, 16
    if not args.skip_bench:
        model = _random_model(cfg, torch.float32, device)
        loaded = LoadedModel(model, tok, get_adapter(model), "smollm2-shape-random")
        r = target_opt.run("smollm2-135m architecture, random weights", n=args.n, layer=8, steps=20,
                           loaded=loaded, early_stop_loss=0.0)
        target_opt.print_report(r)
        figures["target_opt_smollm2_shape"] = r
        del model, loaded
        if device == "cuda":
            torch.cuda.empty_cache()

    big = LlamaConfig(
        vocab_size=len(tok), hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=8192, rope_theta=500000.0,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )
    if args.small:
        big.hidden_size, big.intermediate_size, big.num_hidden_layers = 64, 128, 10
        big.num_attention_heads, big.num_key_value_heads = 4, 2
    t = time.perf_counter()
    model = _random_model(big, torch.bfloat16, device)
    print(f"8B-shaped bf16 model built in {time.perf_counter() - t:.1f} s "
          f"({sum(p.numel() for p in model.parameters()) / 1e9:.2f} B params)", flush=True)
    adapter = get_adapter(model)
    requests = [r.request() for r in load_records("counterfact-sample", limit=2 * args.batch).records]
    store = CovarianceStore(root=os.path.join(out, "stats-tmp") if args.small else "/tmp/ep-stats", progress=False)
    originals = {n: p.detach().clone() for n, p in model.named_parameters() if "proj" in n}
    for method in args.methods:
        try:
            info = _check_method(method, model, tok, adapter, store, requests, originals, args, device)
        except Exception as exc:  # one method's failure must not hide the others' figures
            info = {"error": f"{type(exc).__name__}: {exc}"}
            for p_name, p in model.named_parameters():
                if p_name in originals:
                    p.data.copy_(originals[p_name])
        print(method, json.dumps(info, default=str), flush=True)
        figures[f"{method}_8b_shape_bf16"] = info
        with open(os.path.join(out, "device_check.json"), "w") as fh:
            json.dump(figures, fh, indent=2, default=str)


def _check_method(method, model, tok, adapter, store, requests, originals, args, device) -> dict:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    import yaml

    overrides = {"mom2_n_samples": 300, "mom2_max_len": 256, "v_num_grad_steps": args.steps}
    overrides |= {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    editor = make_editor(method, model, tok, "llama3-8b-instruct", stats=store, model_id="llama3-8b-shape-random",
                         overrides=overrides)
    timings = []
    for start in (0, args.batch):
        t = time.perf_counter()
        rep = editor.apply(requests[start : start + args.batch])
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append({"wall_s": round(time.perf_counter() - t, 2), **{k: round(v, 2) for k, v in rep.timings.items()}})
        assert all(torch.isfinite(torch.tensor(x.loss)) for x in rep.requests), "non-finite target loss"
    t = time.perf_counter()
    editor.finalize()
    finalize_s = time.perf_counter() - t
    written = [n for n, p in model.named_parameters() if n in originals and not torch.equal(p, originals[n])]
    finite = all(torch.isfinite(p).all().item() for n, p in model.named_parameters() if n in written)
    dtype_ok = all(adapter.edit_weight(model, l).dtype == torch.bfloat16 for l in editor.layers)
    editor.restore()
    restored = all(torch.equal(p, originals[n]) for n, p in model.named_parameters() if n in originals)
    info = {"batches": timings, "finalize_s": round(finalize_s, 2),
            "changed_layers": sorted({int(n.split(".")[2]) for n in written}),
            "changed_modules": sorted({n.split(".")[-2] for n in written}), "weights_finite": finite,
            "bf16_kept": dtype_ok, "restore_exact": restored}
    if method == "alphaedit":
        info["nullspace"] = {l: [i.dim, round(i.energy_fraction, 4)] for l, i in editor.nullspace.items()}
    if device == "cuda":
        info["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    return info


if __name__ == "__main__":
    main()
