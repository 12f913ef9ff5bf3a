"""A whole edit batch against the sum of its parts, each measured alone in the same run.

The parts of a MEMIT-family batch are the target optimization (its arithmetic at the
measured matmul peak: the floor the target row of the table measures against), the key
passes (bare truncated forwards over the same key rows, as many as the method runs: one
per edit layer, keys recomputed after each layer's write, and one after the batch for
K_p), and the closed-form solves (each layer's solve called alone on the same inputs).
Whatever the batch spends beyond their sum is orchestration: validation, snapshots,
writes, template generation, the covariance lookup.
"""

from __future__ import annotations

import time

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.editing.prompts import batch_rows, key_rows
from editprobe.models.hooks import capture, run_until_stop

from .table import Ratio


def _bare_key_pass(model, tok, adapter, requests, templates, top_layer: int) -> float:
    """One forward over the key rows, stopped after ``top_layer``, no hooks but the stop."""
    rb = batch_rows(tok, key_rows(tok, requests, templates), "right")
    b = rb.batch.to(next(model.parameters()).device)
    t = time.perf_counter()
    with torch.no_grad(), capture(model, [], stop_after=adapter.path("block", top_layer)):
        run_until_stop(lambda: model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False))
    return time.perf_counter() - t


def run(loaded, target_floor_s_per_request: float, n: int = 20, method: str = "memit",
        model_id: str = "smollm2-135m") -> list[Ratio]:
    """``target_floor_s_per_request``: the target row's floor divided by its request count
    (the same arithmetic per request)."""
    model, tok, adapter = loaded
    requests = [r.request() for r in load_records("counterfact-sample", limit=n).records]
    editor = make_editor(method, model, tok, model_id, model_id=model_id)
    editor.prepare()  # C0 from the covariance cache: the C0 row measures computing it
    templates = editor.templates()
    t = time.perf_counter()
    report = editor.apply(requests)
    batch_s = time.perf_counter() - t
    editor.restore()

    # the parts, alone, on the unedited model
    targets = editor.compute_targets(requests)
    keys_s = sum(_bare_key_pass(model, tok, adapter, requests, templates.all, editor.critical_layer)
                 for _ in editor.layers)
    keys_s += _bare_key_pass(model, tok, adapter, requests, templates.all, max(editor.layers))
    solve_s = 0.0
    for i, layer in enumerate(editor.layers):
        K, R = editor.layer_inputs(requests, targets, i, layer)
        t = time.perf_counter()
        editor.solve(layer, K, R)
        solve_s += time.perf_counter() - t
    floor = target_floor_s_per_request * n + keys_s + solve_s
    timings = report.timings
    return [Ratio(f"edit batch ({method}, {n})", "targets floor + bare key passes + solves", batch_s, floor, None,
                  f"parts in the batch: targets {timings['targets_s']:.1f} s, insert {timings['insert_s']:.1f} s, "
                  f"K_p keys {timings['after_batch_s']:.1f} s; floors: targets "
                  f"{target_floor_s_per_request * n:.1f} s, key passes {keys_s:.2f} s, solves {solve_s:.2f} s")]
