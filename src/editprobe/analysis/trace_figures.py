"""Figures of a causal trace: one bucket × layer heat map per kind and a line plot of the
last-subject-token effect per layer for the three kinds.

Figures are drawn on explicit Agg canvases (no pyplot), so drawing sets no global backend
and leaves no figure open; PNGs are written atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

KIND_LABELS = {"block": "hidden state (block output)", "mlp": "MLP output", "attn": "attention output"}
KIND_COLORMAPS = {"block": "Purples", "mlp": "Greens", "attn": "Reds"}


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path: Path) -> None:
    from ..paths import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")


def draw_heatmap(
    buckets_by_layer: np.ndarray, kind: str, path: Path, model_name: str, n_records: int, layers_window: int
) -> None:
    """Average indirect effect, buckets (rows) × layers (columns); empty buckets in grey."""
    from matplotlib import colormaps

    from .tracing import BUCKETS

    values = np.ma.masked_invalid(np.asarray(buckets_by_layer, dtype=float))
    num_layers = values.shape[1]
    fig = _figure(max(4.0, 1.2 + 0.28 * num_layers), 3.2)
    ax = fig.add_subplot()
    cmap = colormaps[KIND_COLORMAPS.get(kind, "viridis")].with_extremes(bad="#dddddd")
    # Zero stays at the light end of the scale, so a weak effect never looks strong.
    top = float(values.max()) if values.count() else 1.0
    bottom = min(0.0, float(values.min())) if values.count() else 0.0
    image = ax.imshow(values, aspect="auto", cmap=cmap, interpolation="nearest", vmin=bottom,
                      vmax=max(top, bottom + 1e-6))
    ax.set_yticks(range(len(BUCKETS)), labels=list(BUCKETS), fontsize=8)
    step = max(1, num_layers // 12)
    ax.set_xticks(range(0, num_layers, step))
    ax.set_xlabel("layer" if kind == "block" else f"centre of {layers_window} restored layers")
    ax.set_title(f"{KIND_LABELS.get(kind, kind)}: average indirect effect ({n_records} records)\n{model_name}", fontsize=9)
    fig.colorbar(image, ax=ax, label="p(restored) − p(corrupted)")
    _save(fig, path)


def draw_summary(curves: dict[str, np.ndarray], path: Path, model_name: str, recommendation: dict) -> None:
    """Last-subject-token indirect effect per layer, one line per kind, with the
    recommended MEMIT window shaded."""
    from matplotlib.ticker import MaxNLocator

    fig = _figure(6.0, 3.4)
    ax = fig.add_subplot()
    colors = {"block": "tab:purple", "mlp": "tab:green", "attn": "tab:red"}
    for kind, curve in curves.items():
        curve = np.asarray(curve, dtype=float)
        ax.plot(range(len(curve)), curve, marker="o", markersize=3, label=KIND_LABELS.get(kind, kind),
                color=colors.get(kind))
    window = recommendation.get("window") or []
    if window:
        ax.axvspan(window[0] - 0.5, window[-1] + 0.5, color="tab:green", alpha=0.12,
                   label=f"suggested MEMIT layers {window[0]}–{window[-1]}")
    ax.axhline(0.0, color="black", linewidth=0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("average indirect effect")
    ax.set_title(f"last subject token — {model_name}", fontsize=9)
    ax.legend(fontsize=7)
    _save(fig, path)
