"""Evaluation plots (matplotlib, Agg backend). Every function saves a PNG and returns its path."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["plot_recall_curves", "plot_cold_warm_bars", "plot_projection", "plot_similarity_histogram",
           "plot_training_loss", "pca_2d"]


def _plt():
    import matplotlib
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _plt().close(fig)
    return path


def plot_recall_curves(curves: Mapping[str, Mapping[int, float]], path: str | os.PathLike,
                       title: str = "recall@k") -> Path:
    """curves: {method: {k: recall}}; one line per method (methods with no values are skipped)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        pts = sorted((int(k), v) for k, v in c.items() if v is not None and np.isfinite(v))
        if pts:
            ax.plot([k for k, _ in pts], [v for _, v in pts], marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("k")
    ax.set_ylabel("recall@k")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_training_loss(curves: Mapping[str, tuple[Any, Any]], path: str | os.PathLike,
                       title: str = "training loss (metrics.jsonl)") -> Path:
    """curves: {run: (steps int [N], losses float [N])}; one line per run (non-finite points and
    runs without points are skipped)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, (steps, losses) in curves.items():
        x, y = np.asarray(steps, dtype=np.float64), np.asarray(losses, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            ax.plot(x[ok], y[ok], label=name)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def plot_cold_warm_bars(values: Mapping[str, Mapping[str, float | None]], path: str | os.PathLike,
                        metric: str = "board_recall@10") -> Path:
    """values: {method: {"warm": v, "cold": v}}; None (unsupported) is drawn as an empty slot
    labelled "n/a"."""
    plt = _plt()
    methods = list(values)
    x = np.arange(len(methods))
    fig, ax = plt.subplots(figsize=(max(4, 1.4 * len(methods)), 4))
    for j, part in enumerate(("warm", "cold")):
        for i, m in enumerate(methods):
            v = values[m].get(part)
            xi = x[i] + (j - 0.5) * 0.38
            if v is None or not np.isfinite(v):
                ax.text(xi, 0.01, "n/a", ha="center", fontsize=8)
            else:
                ax.bar(xi, v, width=0.38, color=f"C{j}", label=part if i == 0 else None)
    ax.set_xticks(x, methods)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: warm vs cold-start")
    ax.legend()
    return _save(fig, path)


def pca_2d(emb: torch.Tensor, seed: int = 0) -> np.ndarray:
    """float32 [P, 2]: projection on the top two principal components (``torch.pca_lowrank``)."""
    x = torch.as_tensor(emb).detach().float().cpu()
    torch.manual_seed(seed)
    x = x - x.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(x, q=min(2, *x.shape), center=False)
    out = (x @ v[:, :2]).numpy()
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


def plot_projection(emb: torch.Tensor, labels: Any, path: str | os.PathLike, title: str = "PCA",
                    max_points: int = 5000, seed: int = 0) -> Path:
    """2-D PCA of emb float [P, D], points colored by labels int [P] (board or topic; -1 grey);
    at most ``max_points`` points drawn at random (``seed``)."""
    plt = _plt()
    lab = np.asarray(labels)
    xy = pca_2d(emb, seed)
    idx = np.arange(len(xy))
    if len(idx) > max_points:
        idx = np.random.default_rng(seed).choice(idx, max_points, replace=False)
    fig, ax = plt.subplots(figsize=(5, 5))
    known = idx[lab[idx] >= 0]
    ax.scatter(xy[idx[lab[idx] < 0], 0], xy[idx[lab[idx] < 0], 1], s=4, c="lightgrey")
    ax.scatter(xy[known, 0], xy[known, 1], s=4, c=lab[known] % 20, cmap="tab20")
    ax.set_title(title)
    return _save(fig, path)


def plot_similarity_histogram(emb: torch.Tensor, pos_pairs: Any, path: str | os.PathLike,
                              num_negatives: int = 20000, seed: int = 0, title: str = "cosine similarity") -> Path:
    """Histograms of cosine similarity of positive pairs (int [M, 2] pin pairs, e.g. board mates)
    against random pairs (``num_negatives`` drawn with ``seed``, which are mostly negatives)."""
    plt = _plt()
    e = F.normalize(torch.as_tensor(emb).detach().float().cpu(), dim=1)
    pp = torch.as_tensor(np.asarray(pos_pairs), dtype=torch.int64).reshape(-1, 2)
    pos = (e[pp[:, 0]] * e[pp[:, 1]]).sum(1).numpy()
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(e.shape[0], (num_negatives,), generator=g)
    b = torch.randint(e.shape[0], (num_negatives,), generator=g)
    keep = a != b
    neg = (e[a[keep]] * e[b[keep]]).sum(1).numpy()
    fig, ax = plt.subplots(figsize=(5, 4))
    bins = np.linspace(-1, 1, 61)
    ax.hist(neg, bins=bins, density=True, alpha=0.6, label=f"random pairs ({len(neg)})")
    if len(pos):
        ax.hist(pos, bins=bins, density=True, alpha=0.6, label=f"positives ({len(pos)})")
    ax.set_xlabel("cosine")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)
