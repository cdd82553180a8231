"""Training from a notebook (callback trainer, live loss plot, runs, losses) and evaluation views."""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from training.config import load_train_config
from training.evaluation.plots import pca_2d
from training.evaluation.run_eval import truth_labels
from training.logging_utils import read_jsonl
from training.notebook_utils.display import figure_png, pyplot
from training.trainer import Trainer, train_or_resume


# ------------------------------------------------------------------------------------ training
class LiveLossPlot:
    """A training callback that records loss terms and redraws a loss plot every ``every``
    steps in a notebook (an IPython display handle, updated in place); outside IPython it only
    records. ``history``: {term: [(step, value), ...]}; ``keys``: the terms plotted (default
    every ``*loss`` term); ``figure()`` draws them again after training."""

    def __init__(self, every: int = 5, keys: Sequence[str] | None = None, title: str = "training loss",
                 display: bool = True):
        self.every = max(1, int(every))
        self.keys = list(keys) if keys else None
        self.title = title
        self.history: dict[str, list[tuple[int, float]]] = {}
        self._handle = None
        self._display = display

    def __call__(self, step: int, terms: Mapping[str, float]) -> None:
        for k, v in terms.items():
            if k.endswith("loss") and (self.keys is None or k in self.keys):
                self.history.setdefault(k, []).append((int(step), float(v)))
        if step % self.every == 0:
            self.refresh()

    def figure(self):
        """Figure of the recorded curves (loss terms on one axis, steps on x)."""
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for k, pts in sorted(self.history.items()):
            if pts:
                ax.plot([s for s, _ in pts], [v for _, v in pts], label=k, lw=1.5 if k == "loss" else 1)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(self.title)
        ax.grid(alpha=0.3)
        if self.history:
            ax.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def refresh(self) -> None:
        """Redraw in place (no-op outside IPython or with ``display=False``)."""
        if not self._display:
            return
        try:
            from IPython import get_ipython
            from IPython.display import Image, display
        except ImportError:  # pragma: no cover - IPython is a dev dependency
            return
        if get_ipython() is None:
            return
        image = Image(data=figure_png(self.figure()), format="png")   # a PNG whatever the backend
        if self._handle is None:
            self._handle = display(image, display_id=True)
        else:
            self._handle.update(image)


def run_dir_name(config: str, overrides: Sequence[str]) -> str:
    """``{config stem}-{8 hex}``: a run directory name that changes with the config's overrides
    (sha256 of the sorted ``key=value`` items)."""
    digest = hashlib.sha256("\n".join(sorted(overrides)).encode()).hexdigest()[:8]
    return f"{Path(str(config)).stem}-{digest}"


def demo_overrides(graph_dir: str | os.PathLike, cache_dir: str | os.PathLike, max_steps: int = 20,
                   batch_size: int = 64, seed: int = 0, num_workers: int = 2,
                   model_overrides: Mapping[str, Any] | None = None, extra: Sequence[str] = ()) -> list[str]:
    """``key=value`` overrides for ``training/configs/demo.yaml`` / ``clip_only.yaml`` from a
    notebook: a built graph store, a text-feature cache directory, a short schedule (warmup a
    tenth of it, one checkpoint at the end, no TensorBoard), seeds and ``model.overrides``.
    Notebooks 03 and 04 build the same list, so 04 reuses the runs 03 trained."""
    ov = [f"data.graph={Path(graph_dir).absolute()}", f"data.cache_dir={Path(cache_dir).absolute()}",
          f"data.num_workers={int(num_workers)}", f"train.max_steps={int(max_steps)}",
          f"train.batch_size={int(batch_size)}", f"train.seed={int(seed)}", f"sampler.seed={int(seed)}",
          f"optim.warmup_steps={max(1, int(max_steps) // 10)}", f"train.checkpoint_every={int(max_steps)}",
          f"train.log_every={max(1, min(5, int(max_steps) // 10))}", "train.tensorboard=false"]
    if model_overrides:
        ov.append("model.overrides=" + json.dumps(dict(model_overrides), sort_keys=True))
    return ov + list(extra)


def train_run(config: str | os.PathLike, run_dir: str | os.PathLike, overrides: Sequence[str] = (),
              callbacks: Iterable[Callable[[int, dict], Any]] = (), reuse: bool = True) -> dict[str, Any]:
    """Train ``config`` (a shipped config name such as ``demo`` / ``clip_only``, or a YAML path)
    with ``overrides`` (``["train.max_steps=20", ...]``) into ``run_dir``, calling ``callbacks``
    after every step (``Trainer(callbacks=...)``). With ``reuse``, a run that already finished there
    (``summary.json`` at ``train.max_steps``) is not trained again and an unfinished one is
    resumed (``training.trainer.train_or_resume``). Returns the run summary."""
    if reuse:
        return train_or_resume(config, run_dir, list(overrides), callbacks)
    return Trainer(load_train_config(config, list(overrides)), run_dir, callbacks=callbacks).train()


def read_losses(run_dir: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{"step": int64 [N], term: float64 [N] ...} from ``RUN_DIR/metrics.jsonl`` (every
    ``*loss`` term, or ``keys``); a term missing from a line is NaN. Safe while training runs
    (a torn last line is skipped)."""
    recs = read_jsonl(Path(run_dir) / "metrics.jsonl")
    names = list(keys) if keys else sorted({k for r in recs for k in r if k.endswith("loss")})
    out = {"step": np.array([int(r["step"]) for r in recs], dtype=np.int64)}
    for k in names:
        out[k] = np.array([float(r.get(k, "nan")) for r in recs], dtype=np.float64)
    return out


def plot_loss_curves(runs: Mapping[str, str | os.PathLike], keys: Sequence[str] = ("loss",), figsize=(6, 3.5)):
    """Figure: ``keys`` terms of several runs ({label: run_dir}) from their metrics.jsonl."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=figsize)
    for label, rd in runs.items():
        h = read_losses(rd)
        for k in keys:
            if k in h and len(h["step"]):
                ax.plot(h["step"], h[k], label=f"{label}: {k}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ evaluation
def recall_curves(evaluations: Mapping[str, Mapping[str, Any]], prefix: str = "board_") -> dict[str, dict[int, float]]:
    """{label: {k: recall@k}} from ``evaluation.json`` contents ({label: evaluation}, e.g. from
    ``training.evaluation.run_eval.load_evaluation``): every ``{prefix}recall@k`` metric present
    and not None. prefix: ``board_`` (warm pins' held-out edges), ``cold_start_board_``, ``t2i_``."""
    pat = re.compile(rf"^{re.escape(prefix)}recall@(\d+)$")
    out = {}
    for label, ev in evaluations.items():
        m = ev.get("metrics", ev)
        out[label] = {int(pat.match(k).group(1)): float(v) for k, v in m.items()
                      if pat.match(k) and v is not None}
        out[label] = dict(sorted(out[label].items()))
    return out


def pin_labels(g: Any) -> dict[str, np.ndarray]:
    """Labels to color a 2-D map by, int64 [P] each (-1 = none): ``board`` (the pin's largest
    board, all edges), and on the synthetic world ``topic`` and ``style`` (the hidden truth,
    ``training.evaluation.run_eval.truth_labels``)."""
    sizes = g.board_degrees().numpy()
    indptr = g.pin_indptr.numpy()
    indices = g.pin_indices.numpy()
    board = np.full(g.num_pins, -1, np.int64)
    for p in range(g.num_pins):
        bs = indices[indptr[p]:indptr[p + 1]]
        if bs.size:
            board[p] = int(bs[np.argmax(sizes[bs])])
    out = {"board": board}
    truth = truth_labels(g)
    if truth is not None:
        out.update(truth)
    return out


def plot_embedding_map(emb: torch.Tensor, labels: Mapping[str, Any], max_points: int = 3000, seed: int = 0,
                       title: str = "", cell: float = 4.0, top_boards: int = 20):
    """Figure: the 2-D PCA map of ``emb`` (float [P, D], ``training.evaluation.plots.pca_2d``),
    one panel per labelling ({name: int [P]}, -1 grey). A ``board`` labelling colors only its
    ``top_boards`` largest boards (the rest grey), since 20 colors cannot tell hundreds apart.
    At most ``max_points`` points (drawn with ``seed``)."""
    plt = pyplot()
    xy = pca_2d(emb, seed)
    idx = np.arange(len(xy))
    if idx.size > max_points:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_points, replace=False))
    fig, axes = plt.subplots(1, len(labels), figsize=(cell * len(labels), cell), squeeze=False)
    for ax, (name, lab) in zip(axes[0], labels.items()):
        lab = np.asarray(lab, np.int64).copy()
        if name == "board":
            ids, counts = np.unique(lab[lab >= 0], return_counts=True)
            keep = ids[np.argsort(-counts, kind="stable")[:top_boards]]
            lab[~np.isin(lab, keep)] = -1
            _, lab_c = np.unique(np.where(lab >= 0, lab, -1), return_inverse=True)
            lab = np.where(lab >= 0, lab_c, -1)
        li = lab[idx]
        ax.scatter(xy[idx[li < 0], 0], xy[idx[li < 0], 1], s=3, c="lightgrey")
        ax.scatter(xy[idx[li >= 0], 0], xy[idx[li >= 0], 1], s=4, c=li[li >= 0] % 20, cmap="tab20", vmin=0, vmax=19)
        ax.set_title(f"{title} colored by {name}".strip(), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
