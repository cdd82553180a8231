"""The synthetic world built once per (size, seed), and graph views: degrees, splits, picks."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph import PinBoardGraph
from graph.dataset import build_graph_from_dataset
from graph.splits import COLD, TRAIN
from graph.synth import read_truth, synthesize
from training.notebook_utils.display import pyplot


# ------------------------------------------------------------------------------------ the world
@dataclass
class World:
    """A synthetic world on disk: ``dataset_dir`` (``graph.synth`` output), ``graph_dir`` (its
    graph store with splits), ``graph`` (opened, memory-mapped), ``truth`` (``SynthTruth``)."""
    dataset_dir: Path
    graph_dir: Path
    graph: Any
    truth: Any


def default_work_dir() -> Path:
    """``$PINCLIP_NOTEBOOK_DIR`` or ``<system temp>/pinclip_notebooks``: where notebooks put
    worlds, runs and plots when no ``work_dir`` parameter is given (shared between notebooks)."""
    env = os.environ.get("PINCLIP_NOTEBOOK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "pinclip_notebooks"


def synthetic_world(work_dir: str | os.PathLike, num_pins: int = 2000, num_boards: int = 200, seed: int = 0,
                    image_size: int = 64, fresh_fraction: float = 0.1, workers: int | None = None,
                    progress: bool = True) -> World:
    """Synthesize the world (``graph.synth.synthesize``) and build its graph store
    (``graph.dataset.build_graph_from_dataset``, cold-start pins = the ``fresh`` flags, split seed
    ``seed``) under ``work_dir/world_p{pins}_b{boards}_s{seed}_i{size}``; a world already there
    with the same parameters is reused. Returns a :class:`World`."""
    root = Path(work_dir) / f"world_p{num_pins}_b{num_boards}_s{seed}_i{image_size}"
    if fresh_fraction != 0.1:
        root = root.with_name(root.name + f"_f{fresh_fraction:g}")
    dataset_dir, graph_dir = root / "dataset", root / "graph"
    want = {"num_pins": num_pins, "num_boards": num_boards, "seed": seed, "image_size": image_size,
            "images": True, "fresh_fraction": float(fresh_fraction)}
    meta = dataset_dir / "synth.json"
    if not (meta.is_file() and json.loads(meta.read_text()).get("params") == want):
        root.mkdir(parents=True, exist_ok=True)
        synthesize(dataset_dir, num_pins, num_boards, seed, image_size=image_size,
                   fresh_fraction=fresh_fraction, workers=workers, progress=progress)
        if graph_dir.exists():
            shutil.rmtree(graph_dir)
    if not (graph_dir / "manifest.json").is_file():
        build_graph_from_dataset(dataset_dir, graph_dir, seed=seed, progress=progress)
    return World(dataset_dir, graph_dir, PinBoardGraph.open(graph_dir), read_truth(dataset_dir))


# ------------------------------------------------------------------------------------ graph views
def degree_counts(degrees: Any) -> tuple[np.ndarray, np.ndarray]:
    """(values int64 [K], counts int64 [K]): how many nodes have each degree value, for values
    >= 1 that occur (zero-degree nodes are left out: they have no place on a log axis)."""
    d = np.asarray(torch.as_tensor(degrees).cpu().numpy() if isinstance(degrees, torch.Tensor) else degrees,
                   dtype=np.int64)
    counts = np.bincount(d[d > 0]) if (d > 0).any() else np.zeros(1, np.int64)
    values = np.flatnonzero(counts)
    return values.astype(np.int64), counts[values].astype(np.int64)


def plot_degree_distributions(g: Any, figsize: tuple[float, float] = (10, 4)):
    """Figure: log-log count of pins per degree (boards per pin) and of boards per size (pins
    per board), markers at every observed value."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    for ax, deg, what in ((axes[0], g.pin_degrees(), "pin degree (boards per pin)"),
                          (axes[1], g.board_degrees(), "board size (pins per board)")):
        x, c = degree_counts(deg)
        ax.loglog(x, c, "o", ms=4)
        ax.set_xlabel(what)
        ax.set_ylabel("count")
        ax.grid(alpha=0.3, which="both")
        d = np.asarray(deg)
        ax.set_title(f"{what.split(' (')[0]}: mean {d.mean():.2f}, max {d.max()}")
    fig.tight_layout()
    return fig


def split_summary(g: Any) -> dict[str, int]:
    """Counts of the graph's splits: edges per split (``train``, ``val``, ``test``,
    ``cold_start``), ``warm_pins`` (pins with a train edge), ``cold_start_pins``,
    ``isolated_pins`` (no edge at all) and ``boards_with_cold_pins``."""
    if g.splits is None:
        raise ValueError("the graph has no splits (build it with graph.dataset / pinclip build-graph)")
    out = {k: v for k, v in g.splits.counts().items()}
    pins, boards = g.edges()
    split = np.asarray(g.splits.edge_split)
    warm = np.zeros(g.num_pins, bool)
    warm[pins.numpy()[split == TRAIN]] = True
    out["warm_pins"] = int(warm.sum())
    out["isolated_pins"] = int((g.pin_degrees() == 0).sum())
    out["boards_with_cold_pins"] = int(np.unique(boards.numpy()[split == COLD]).size)
    return out


def plot_split_summary(g: Any, figsize: tuple[float, float] = (10, 3.5)):
    """Figure: edges per split (bars), and the degree distribution of cold-start pins against
    warm pins (cold-start pins keep their edges for evaluation, hidden from training)."""
    plt = pyplot()
    s = split_summary(g)
    fig, axes = plt.subplots(1, 2, figsize=figsize)
    names = ["train", "val", "test", "cold_start"]
    axes[0].bar(names, [s[n] for n in names], color=["C0", "C1", "C2", "C3"])
    for i, n in enumerate(names):
        axes[0].text(i, s[n], str(s[n]), ha="center", va="bottom", fontsize=8)
    axes[0].set_ylabel("edges")
    axes[0].set_title(f"edges per split ({s['warm_pins']} warm pins, {s['cold_start_pins']} cold-start)")
    deg = g.pin_degrees().numpy()
    cold = g.splits.is_cold_start(g.num_pins).numpy()
    bins = np.arange(1, max(2, int(deg.max()) + 2))
    axes[1].hist([deg[~cold & (deg > 0)], deg[cold]], bins=bins, density=True, label=["warm", "cold-start"],
                 color=["C0", "C3"])
    axes[1].set_xscale("log")
    axes[1].set_yscale("log")
    axes[1].set_xlabel("pin degree (all edges)")
    axes[1].set_ylabel("share of pins")
    axes[1].legend()
    fig.tight_layout()
    return fig


def pick_pins(g: Any, n: int, seed: int = 0, min_degree: int = 1, cold_share: float = 0.0) -> torch.Tensor:
    """int64 [<= n] sorted pin ids drawn with ``seed`` without replacement: warm pins (not
    cold-start) with at least ``min_degree`` boards, and ``round(n * cold_share)`` of them
    cold-start pins instead (as many as exist). Fewer when fewer qualify."""
    rng = np.random.default_rng(seed)
    cold = g.splits.is_cold_start(g.num_pins).numpy()
    warm = np.flatnonzero(~cold & (g.pin_degrees().numpy() >= min_degree))
    cold_ids = np.flatnonzero(cold)
    n_cold = min(int(round(n * cold_share)), cold_ids.size)
    n_warm = min(n - n_cold, warm.size)
    picked = np.concatenate([rng.choice(warm, n_warm, replace=False), rng.choice(cold_ids, n_cold, replace=False)])
    return torch.from_numpy(np.sort(picked).astype(np.int64))


def hidden_groups(truth: Any) -> np.ndarray:
    """int64 [P]: ``style * num_topics + topic`` of each pin of a synthetic world
    (``SynthTruth``): the hidden group a board is about (boards hold one style and its topics)."""
    topic = np.asarray(truth.pin_topic, np.int64)
    return np.asarray(truth.pin_style, np.int64) * len(truth.params["topics"]) + topic


def pick_board(g: Any, min_size: int = 6, seed: int = 0) -> int:
    """A board with at least ``min_size`` pins (the largest board when none has that many),
    drawn with ``seed``."""
    sizes = g.board_degrees().numpy()
    big = np.flatnonzero(sizes >= min_size)
    if big.size == 0:
        return int(sizes.argmax())
    return int(np.random.default_rng(seed).choice(big))
