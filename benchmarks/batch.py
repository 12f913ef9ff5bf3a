"""A whole edit batch against the sum of its parts, each measured alone in the same run.

The parts of a MEMIT-family batch are the target optimization (its arithmetic at the
measured matmul peak: the floor the target row of the table measures against), the key
passes (bare forwards over the same key rows cut at the edited token: the first from the
embeddings, each later one from the block written last, as the engine runs them; the K_p
keys are the ones the solves read), and the closed-form solves (each layer's solve called alone on the same inputs).
Whatever the batch spends beyond their sum is orchestration: validation, snapshots,
writes, template generation, the covariance lookup.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from editprobe.data import load_records
from editprobe.editing import make_editor
from editprobe.editing.prompts import batch_rows, key_rows
from editprobe.models.hooks import capture, run_until_stop

from .table import Ratio


def _bare_key_passes(model, tok, adapter, requests, templates, layers: list[int], critical: int) -> float:
    """The key passes' arithmetic: rows cut at the edited token, the first pass from the
    embeddings to the critical layer, each later one from the block written last (its
    input given), no hooks but the stop. Inputs are captured in an untimed pass."""
    from editprobe.models.resume_forward import block_output_arity, resume_from

    rows = [replace(r, ids=r.ids[: r.subject_index + 1]) for r in key_rows(tok, requests, templates)]
    b = batch_rows(tok, rows, "right").batch.to(next(model.parameters()).device)

    def forward():
        model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False)

    stop = adapter.path("block", critical)
    starts = [layers[i - 1] for i in range(1, len(layers))]
    with torch.no_grad(), capture(model, [adapter.path("block", l) for l in starts], what="input") as given:
        arity = block_output_arity(adapter.block(model, 0), forward)
    total = 0.0
    with torch.no_grad():
        t = time.perf_counter()
        with capture(model, [], stop_after=stop):
            run_until_stop(forward)
        total += time.perf_counter() - t
        for start in starts:
            h = given[adapter.path("block", start)]
            t = time.perf_counter()
            with resume_from(model, adapter, start - 1, arity, lambda _x: h), capture(model, [], stop_after=stop):
                run_until_stop(forward)
            total += time.perf_counter() - t
    return total


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
    keys_s = _bare_key_passes(model, tok, adapter, requests, templates.all, editor.layers, editor.critical_layer)
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
