"""Writing a causal trace: trace.json (the keys the HTML report reads), the per-record
arrays as safetensors and the figures, each atomically, trace.json last."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .tracing import BUCKETS, KINDS, LAST_SUBJECT, TraceResult

FIGURES = {"block": "trace_block.png", "mlp": "trace_mlp.png", "attn": "trace_attn.png", "summary": "trace_summary.png"}
ARRAYS_FILE = "trace_records.safetensors"


def _json_floats(values: np.ndarray) -> list:
    """Nested lists with NaN as null: JSON has no NaN and browsers reject it."""
    if values.ndim == 1:
        return [None if np.isnan(v) else float(v) for v in values]
    return [_json_floats(row) for row in values]


def trace_summary(result: TraceResult, model_name: str, data: str, tok=None) -> dict:
    """The trace.json document (keys read by the HTML report)."""
    s = result.settings
    records = []
    for i, t in enumerate(result.traces):
        p = t.prepared
        entry = {
            "record_id": p.record.id, "query": p.record.query, "subject": p.record.subject,
            "answer": p.record.target_true, "p_clean": t.p_clean, "p_corrupted": t.p_corrupted,
            "index": i, "subject_tokens": [p.subject_first, p.subject_last], "num_positions": len(p.ids),
        }
        if tok is not None:
            entry["tokens"] = [tok.decode([x]) for x in p.ids]
            entry["answer_token"] = tok.decode([p.target_id])
        records.append(entry)
    return {
        "model": model_name, "data": data, "n_requested": result.n_requested, "n_known": len(result.traces),
        "samples": s.samples, "noise": float(s.noise), "noise_std": result.noise_std,
        "layers_window": s.layers_window, "num_layers": result.num_layers, "buckets": list(BUCKETS),
        "kinds": {k: {"buckets_by_layer": _json_floats(result.buckets_by_layer(k)), "low": result.low,
                      "high": result.high} for k in KINDS},
        "recommendation": result.recommendation(), "figures": dict(FIGURES), "records": records,
    }


def save_trace(result: TraceResult, out_dir: str | Path, model_name: str, data: str, tok=None) -> dict:
    """Write arrays, figures and, last, trace.json (each atomically), so a trace.json on
    disk always comes with everything it names."""
    from safetensors.numpy import save_file

    from ..paths import atomic_path, write_json_atomic
    from .trace_figures import draw_heatmap, draw_summary

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = trace_summary(result, model_name, data, tok)
    arrays = {f"{k}/{i}": np.ascontiguousarray(t.effects[k]) for i, t in enumerate(result.traces) for k in KINDS}
    with atomic_path(out / ARRAYS_FILE) as tmp:
        save_file(arrays, str(tmp), metadata={"layout": "[positions, layers]", "value": "indirect effect"})
    by_kind = {k: result.buckets_by_layer(k) for k in KINDS}
    for k in KINDS:
        draw_heatmap(by_kind[k], k, out / FIGURES[k], model_name, len(result.traces), result.settings.layers_window)
    draw_summary({k: v[LAST_SUBJECT] for k, v in by_kind.items()}, out / FIGURES["summary"], model_name,
                 summary["recommendation"])
    write_json_atomic(out / "trace.json", summary)
    return summary
