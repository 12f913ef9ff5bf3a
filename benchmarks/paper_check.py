"""The paper profile at real size on a GPU (issue #12's device check): AlphaEdit with the
``paper`` profile's Llama-3-8B-Instruct settings on a Llama-3-8B-shaped random model, two
batches of 100 requests, in float32 (the profile's dtype) and in bf16; C0 from a local corpus
(the built-in WikiText sample; the paper's 100k Wikipedia articles need the network).

    python -m benchmarks.paper_check CONFIG_DIR [--small] [--docs 1000] [--batch 100]

Prints and writes $OUT/paper_check.json: C0 time, time per batch, peak GPU memory, the size
of one run checkpoint (``save_state(include_stats=False)``) after each batch, and the 2000-edit
time extrapolated as C0 + 20 × the mean batch time. Random weights: efficacy means nothing
here; only time, memory and size are measured. CONFIG_DIR holds a tokenizer (SmolLM2's).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor, resolve_hparams
from editprobe.editing.lte.covariance import CovarianceStore
from editprobe.editing.settings.profiles import choose_hparams
from editprobe.models.loading import prepare_tokenizer

from .device_check import _random_model


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check(dtype: torch.dtype, tok, args, out: Path, device: str) -> dict:
    from transformers import LlamaConfig

    shape = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=8)
    if args.small:
        shape = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=10, num_attention_heads=4,
                     num_key_value_heads=2)
    config = LlamaConfig(vocab_size=len(tok), max_position_embeddings=8192, rope_theta=500000.0,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, **shape)
    model = _random_model(config, dtype, device)
    choice = choose_hparams("alphaedit", "meta-llama/Meta-Llama-3-8B-Instruct", profile="paper")
    hp = resolve_hparams("alphaedit", choice.path, {"mom2_corpus": "wikitext-sample", "mom2_n_samples": args.docs,
                                                    "v_num_grad_steps": args.steps})
    store = CovarianceStore(root=out / "stats", progress=False)
    editor = make_editor("alphaedit", model, tok, hp, stats=store, model_id=f"llama3-8b-shape-{dtype}")
    requests = [r.request() for r in load_records("counterfact-sample", limit=2 * args.batch).records]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    editor.prepare()  # C0 and the projectors of the five layers
    c0_s = time.perf_counter() - t
    batches, sizes = [], []
    for start in (0, args.batch):
        t = time.perf_counter()
        report = editor.apply(requests[start : start + args.batch])
        if device == "cuda":
            torch.cuda.synchronize()
        batches.append({"wall_s": round(time.perf_counter() - t, 2), **{k: round(v, 2) for k, v in report.timings.items()}})
        ckpt = out / "checkpoint"
        shutil.rmtree(ckpt, ignore_errors=True)
        editor.save_state(ckpt, include_stats=False)
        sizes.append({f.name: f.stat().st_size for f in ckpt.iterdir()} | {"total": _size(ckpt)})
    mean_batch = sum(b["wall_s"] for b in batches) / len(batches)
    info = {"dtype": str(dtype), "hparams_file": choice.file, "c0_documents": args.docs, "c0_s": round(c0_s, 1),
            "batches": batches, "checkpoint_bytes": sizes,
            "extrapolated_2000_edits_h": round((c0_s + (2000 / args.batch) * mean_batch) / 3600, 2)}
    if device == "cuda":
        info["max_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 1)
    del editor, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return info


def main() -> None:
    from transformers import AutoTokenizer

    ap = argparse.ArgumentParser()
    ap.add_argument("config_dir")
    ap.add_argument("--small", action="store_true", help="tiny shapes on CPU (a dry run of this script)")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--docs", type=int, default=1000, help="C0 documents of the local corpus")
    ap.add_argument("--steps", type=int, default=25, help="target-optimization steps (the profile's 25)")
    ap.add_argument("--dtypes", nargs="*", default=["float32", "bfloat16"])
    args = ap.parse_args()
    device = "cpu" if args.small else "cuda"
    out = Path(os.environ.get("OUT", "/tmp")) / "paper_check"
    out.mkdir(parents=True, exist_ok=True)
    tok = AutoTokenizer.from_pretrained(args.config_dir)
    prepare_tokenizer(tok)
    figures = {}
    for name in args.dtypes:
        figures[name] = check(getattr(torch, name), tok, args, out, device)
        print(name, json.dumps(figures[name]), flush=True)
        (out.parent / "paper_check.json").write_text(json.dumps(figures, indent=2))
    shutil.rmtree(out, ignore_errors=True)  # stats and checkpoints: measured, not brought back


if __name__ == "__main__":
    main()
