"""Figures of the mechanism analysis (paper Figures 6–7): the m⁰, m¹, m² vectors of every
record projected to 2-D by PCA and by t-SNE, a thin triangle joining each record's three
points. Drawn on a bare matplotlib Figure (Agg canvas): no pyplot, no global backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

FIGURE_NAMES = (("pca", "analysis_pca.png"), ("tsne", "analysis_tsne.png"))
# (label, colour, marker) of m⁰, m¹, m²
STYLES = (("m⁰ (unedited)", "#4c72b0", "o"), ("m¹ (target for p)", "#dd8452", "^"),
          ("m² (target for neg(p))", "#55a868", "s"))


def stack(m0: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> np.ndarray:
    """[3n, d] in float64: rows 0..n-1 are m⁰, then m¹, then m²."""
    return torch.cat([m0, m1, m2]).double().numpy()


def pca_2d(x: np.ndarray) -> np.ndarray:
    from sklearn.decomposition import PCA

    n_comp = min(2, x.shape[0], x.shape[1])
    out = PCA(n_components=n_comp, svd_solver="full").fit_transform(x)
    return np.pad(out, ((0, 0), (0, 2 - n_comp)))  # a degenerate input still plots


def tsne_perplexity(n_points: int) -> float:
    """sklearn needs perplexity < n_points; 30 is its default, n/3 a usual cap for few points."""
    return float(min(30.0, max(1.0, (n_points - 1) / 3)))


def tsne_2d(x: np.ndarray, seed: int = 0) -> np.ndarray:
    from sklearn.manifold import TSNE

    init = "pca" if min(x.shape) >= 2 else "random"
    return TSNE(n_components=2, perplexity=tsne_perplexity(x.shape[0]), init=init, learning_rate="auto",
                random_state=seed).fit_transform(x)


def draw(points: np.ndarray, n: int, title: str, path: Path, axes: tuple[str, str] = ("", "")) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from ..paths import atomic_path

    fig = Figure(figsize=(6.0, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    groups = points.reshape(3, n, 2)
    for i in range(n):
        tri = groups[[0, 1, 2, 0], i]
        ax.plot(tri[:, 0], tri[:, 1], color="0.6", linewidth=0.5, alpha=0.6, zorder=1)
    for g, (label, colour, marker) in enumerate(STYLES):
        ax.scatter(groups[g, :, 0], groups[g, :, 1], c=colour, marker=marker, s=28, label=label,
                   edgecolors="white", linewidths=0.4, zorder=2)
    ax.set_title(title)
    ax.set_xlabel(axes[0])
    ax.set_ylabel(axes[1])
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def save_figures(m0: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, out: Path, seed: int = 0,
                 title: str = "") -> dict[str, Path]:
    """PCA and t-SNE (seeded) of all m⁰, m¹, m² together; returns {"pca": path, "tsne": path}."""
    x = stack(m0, m1, m2)
    n = m0.shape[0]
    names = dict(FIGURE_NAMES)
    paths = {k: Path(out) / v for k, v in names.items()}
    draw(pca_2d(x), n, f"PCA — {title} ({n} records)", paths["pca"], ("PC 1", "PC 2"))
    draw(tsne_2d(x, seed), n, f"t-SNE — {title} ({n} records)", paths["tsne"], ("t-SNE 1", "t-SNE 2"))
    return paths
