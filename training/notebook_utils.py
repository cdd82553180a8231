"""Small helpers behind the researcher notebooks (``notebooks/*.ipynb``).

The notebooks stay thin: they call the library and this module, and plot. What lives here is
what a notebook needs that the rest of the library has no reason to own:

* the synthetic world, built once per (size, seed) and reused (``synthetic_world``);
* graph views: degree / board-size counts for log-log plots, the split summary;
* pictures of pins: an image grid with captions (``plot_pin_grid``) and a neighbor gallery
  (``plot_neighbor_gallery``) for sampler neighborhoods or embedding nearest neighbors;
* sampler comparisons: neighborhoods from any sampler (``sample_neighborhoods``), their overlap
  with true board-mates (``board_mate_overlap``), visit frequency by rank, throughput, and a
  restart-probability x walk-count sweep (``overlap_sweep``);
* training from a notebook: a ``Trainer`` that calls callbacks after each step
  (``CallbackTrainer``), a live loss plot (``LiveLossPlot``), ``train_run`` (train, or reuse a
  finished run), ``read_losses`` / ``plot_loss_curves`` from ``metrics.jsonl``;
* evaluation of runs (scored by ``training.evaluation.run_eval``): recall@k curves out of
  ``evaluation.json`` (``recall_curves``), labels and the 2-D embedding map.

Every random choice takes an explicit seed. Figures are returned (matplotlib ``Figure``), never
shown or saved here; a notebook displays them. Pin ids are internal ids (int64).
"""
from __future__ import annotations

import copy
import functools
import hashlib
import json
import os
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = [
    "World", "synthetic_world", "default_work_dir", "show", "plot_bars", "format_table",
    "degree_counts", "plot_degree_distributions", "split_summary", "plot_split_summary",
    "pick_pins", "hidden_groups", "pick_board", "load_pin_images", "plot_pin_grid", "plot_neighbor_gallery",
    "sample_neighborhoods", "board_mate_sets", "board_mate_overlap", "board_mate_marks",
    "visit_frequency_by_rank", "plot_visit_frequencies",
    "measure_throughput", "overlap_sweep", "plot_overlap_sweep",
    "CallbackTrainer", "LiveLossPlot", "train_run", "run_dir_name", "demo_overrides", "read_losses", "plot_loss_curves",
    "recall_curves", "pin_labels", "plot_embedding_map",
]


def _plt():
    import matplotlib.pyplot as plt
    return plt


def _png(fig: Any, dpi: int = 80) -> bytes:
    """The PNG bytes of ``fig``; the figure is closed."""
    import io
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    finally:
        _plt().close(fig)
    return buf.getvalue()


def show(fig: Any, dpi: int = 80) -> None:
    """Display ``fig`` as a PNG in a notebook (whatever the matplotlib backend, Agg included)
    and close it, so it is drawn exactly once; outside IPython it is only closed."""
    from IPython import get_ipython
    from IPython.display import Image, display
    if get_ipython() is None:
        _plt().close(fig)
        return
    display(Image(data=_png(fig, dpi), format="png"))


def plot_bars(values: Mapping[str, float], ylabel: str = "", title: str = "", fmt: str = "{:.3g}",
              figsize: tuple[float, float] = (5, 3)):
    """Figure: one labelled bar per ``{name: value}`` (NaN / None drawn as "n/a")."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=figsize)
    names = list(values)
    for i, n in enumerate(names):
        v = values[n]
        if v is None or not np.isfinite(v):
            ax.text(i, 0, "n/a", ha="center", va="bottom", fontsize=8)
            continue
        ax.bar(i, v, color=f"C{i % 10}")
        ax.text(i, v, fmt.format(v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def format_table(rows: Mapping[str, Mapping[str, Any]], keys: Sequence[str] | None = None, digits: int = 3) -> str:
    """A plain-text table: one row per ``{row name: {column: value}}``; ``keys`` picks and
    orders the columns (default: every column in first-seen order); missing / None as "-"."""
    if keys is None:
        keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    def cell(v: Any) -> str:
        if v is None:
            return "-"
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.{digits}f}"
        return str(v)
    table = [["", *keys]] + [[name, *(cell(r.get(k)) for k in keys)] for name, r in rows.items()]
    widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths)))
                     for t in table)


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
    import tempfile
    env = os.environ.get("PINCLIP_NOTEBOOK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / "pinclip_notebooks"


def synthetic_world(work_dir: str | os.PathLike, num_pins: int = 2000, num_boards: int = 200, seed: int = 0,
                    image_size: int = 64, fresh_fraction: float = 0.1, workers: int | None = None,
                    progress: bool = True) -> World:
    """Synthesize the world (``graph.synth.synthesize``) and build its graph store
    (``graph.dataset.build_graph_from_dataset``, cold-start pins = the ``fresh`` flags, split seed
    ``seed``) under ``work_dir/world_p{pins}_b{boards}_s{seed}_i{size}``; a world already there
    with the same parameters is reused. Returns a :class:`World`."""
    from graph import PinBoardGraph
    from graph.dataset import build_graph_from_dataset
    from graph.synth import read_truth, synthesize

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
            import shutil
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
    plt = _plt()
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
    from graph.splits import COLD, TRAIN
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
    plt = _plt()
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


# ------------------------------------------------------------------------------------ pictures
def load_pin_images(features: Any, pins: Any) -> list[np.ndarray | None]:
    """RGB uint8 arrays [H, W, 3] of ``pins`` (int [N]) from the graph's ``FeatureStore``;
    None for -1 padding and for pins without an image."""
    from PIL import Image
    ids = np.asarray(torch.as_tensor(pins).cpu().numpy() if isinstance(pins, torch.Tensor) else pins,
                     dtype=np.int64).reshape(-1)
    out: list[np.ndarray | None] = [None] * ids.size
    ok = np.flatnonzero(ids >= 0)
    paths = features.pin_image_paths(ids[ok]) if ok.size else []
    for i, p in zip(ok, paths):
        if p is not None:
            with Image.open(p) as im:
                out[i] = np.asarray(im.convert("RGB"))
    return out


def _caption(text: str | None, width: int) -> str:
    if text is None:
        return "(no caption)"
    return "\n".join(textwrap.wrap(text, width)[:3]) or "(empty)"


def _show(ax, img: np.ndarray | None, border: str | None = None) -> None:
    if img is None:
        ax.imshow(np.full((8, 8, 3), 235, np.uint8))
        ax.text(0.5, 0.5, "-", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(border is not None)
        if border is not None:
            spine.set_edgecolor(border)
            spine.set_linewidth(3)


def plot_pin_grid(features: Any, pins: Any, ncols: int = 6, captions: bool = True, title: str | None = None,
                  caption_width: int = 18, cell: float = 1.8):
    """Figure: the images of ``pins`` (int [N]) in a grid of ``ncols`` columns, each with its
    pin id and caption (wrapped to ``caption_width`` characters, at most 3 lines)."""
    plt = _plt()
    ids = np.asarray(torch.as_tensor(pins).cpu().numpy() if isinstance(pins, torch.Tensor) else pins,
                     dtype=np.int64).reshape(-1)
    n = max(1, ids.size)
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(cell * ncols, (cell + (0.7 if captions else 0.2)) * nrows),
                             squeeze=False)
    images = load_pin_images(features, ids)
    texts = features.pin_text(ids[ids >= 0]) if captions and (ids >= 0).any() else []
    text_of = dict(zip(ids[ids >= 0].tolist(), texts))
    for j, ax in enumerate(axes.flat):
        if j >= ids.size:
            ax.axis("off")
            continue
        _show(ax, images[j])
        label = f"pin {ids[j]}"
        if captions and ids[j] >= 0:
            label += "\n" + _caption(text_of.get(int(ids[j])), caption_width)
        ax.set_title(label, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_neighbor_gallery(features: Any, query_pins: Any, neighbors: Mapping[str, Any] | Any,
                          num_show: int = 8, marks: Mapping[str, Any] | Any = None, cell: float = 1.1,
                          title: str | None = None):
    """Figure: one row per (query pin, method): the query's image, then its first ``num_show``
    neighbors' images, left to right in rank order.

    query_pins: int [Q]. neighbors: int [Q, T] pin ids (-1 padded), or {method name: int [Q, T]}
    to compare methods (samplers, embeddings) on the same queries. marks: bool [Q, T] (or a dict
    like ``neighbors``): True draws a green border (e.g. "is a true board-mate"), False red.
    """
    plt = _plt()
    q = np.asarray(torch.as_tensor(query_pins).cpu().numpy() if isinstance(query_pins, torch.Tensor)
                   else query_pins, dtype=np.int64).reshape(-1)
    nb = dict(neighbors) if isinstance(neighbors, Mapping) else {"": neighbors}
    mk = (dict(marks) if isinstance(marks, Mapping) else {name: marks for name in nb}) if marks is not None else {}
    rows = [(i, name) for i in range(q.size) for name in nb]
    fig, axes = plt.subplots(len(rows), num_show + 1, figsize=(cell * (num_show + 1) + 1.2, cell * len(rows) + 0.4),
                             squeeze=False)
    query_images = load_pin_images(features, q)
    for r, (i, name) in enumerate(rows):
        row_nb = np.asarray(torch.as_tensor(nb[name]).cpu()[i, :num_show].numpy(), dtype=np.int64)
        row_nb = np.concatenate([row_nb, np.full(num_show - row_nb.size, -1, np.int64)])
        images = load_pin_images(features, row_nb)
        m = mk.get(name)
        row_mark = None if m is None else np.asarray(torch.as_tensor(m).cpu()[i, :num_show].numpy(), dtype=bool)
        _show(axes[r, 0], query_images[i], border="black")
        axes[r, 0].set_ylabel(f"{name}\npin {q[i]}" if name else f"pin {q[i]}", fontsize=7, rotation=0,
                              ha="right", va="center")
        for j in range(num_show):
            border = None
            if row_mark is not None and j < row_mark.size and row_nb[j] >= 0:
                border = "tab:green" if row_mark[j] else "tab:red"
            _show(axes[r, j + 1], images[j], border)
    axes[0, 0].set_title("query", fontsize=8)
    for j in range(num_show):
        axes[0, j + 1].set_title(f"#{j + 1}", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ samplers
def sample_neighborhoods(sampler: Any, seeds: Any, num_neighbors: int = 10, walks_per_seed: int = 200,
                         generator: torch.Generator | None = None):
    """Top-``num_neighbors`` importance neighborhoods of ``seeds`` (int [S]) from any sampler
    ``sampling.build_sampler`` makes, as ``sampling.ImportanceNeighbors`` (neighbors int64
    [S, T], weights float32 [S, T] visit counts or scores, total_visits int64 [S]).

    * ``PinSageSampler``: ``sample(seeds, num_neighbors=...)``;
    * ``PixieSampler``: single-pin queries ``query_batch(seeds[:, None])`` with T set to
      ``num_neighbors`` (on a shallow copy: same graph and generator);
    * a ``random_walk`` callable (kind ``random_walk``): ``walks_per_seed`` walks per seed, the
      pins they reach after each traversal counted, the seed excluded; ties by smaller pin id.
    """
    from sampling import ImportanceNeighbors, PinSageSampler, PixieSampler
    from sampling.neighborhoods import count_visits, top_per_row

    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    if isinstance(sampler, PinSageSampler):
        return sampler.sample(seeds, generator=generator, num_neighbors=num_neighbors)
    if isinstance(sampler, PixieSampler):
        if sampler.num_neighbors != int(num_neighbors):
            sampler = copy.copy(sampler)
            sampler.num_neighbors = int(num_neighbors)
        return sampler.query_batch(seeds[:, None], generator=generator)
    if callable(sampler):
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        rep = seeds.repeat_interleave(walks_per_seed)
        trace = sampler(rep, generator=gen)
        visited = trace[:, 2::2]
        rows = torch.arange(seeds.numel()).repeat_interleave(walks_per_seed)[:, None].expand_as(visited)
        ok = visited >= 0
        sg = sampler.args[0] if isinstance(sampler, functools.partial) and sampler.args else None
        num_pins = int(getattr(sg, "num_pins", 0) or 0) or \
            int(max(int(seeds.max()) if seeds.numel() else 0, int(trace.max()))) + 1
        r, items, counts = count_visits(rows[ok], visited[ok], num_pins, drop=seeds)
        top, best = top_per_row(r, items, counts, seeds.numel(), num_neighbors, num_pins)
        total = torch.bincount(rows[ok], minlength=seeds.numel())
        return ImportanceNeighbors(seeds, top, best.float(), total)
    raise TypeError(f"sample_neighborhoods: unsupported sampler {type(sampler).__name__} "
                    "(expected PinSageSampler, PixieSampler or a random_walk callable)")


def board_mate_sets(g: Any, pins: Any) -> list[set[int]]:
    """For each pin of ``pins`` (int [S]): the set of its board-mates (pins sharing at least one
    board with it in ``g``, all edges, itself excluded)."""
    out = []
    for p in np.asarray(pins, dtype=np.int64).reshape(-1):
        mates: set[int] = set()
        for b in g.boards_of(int(p)).tolist():
            mates.update(g.pins_of(int(b)).tolist())
        mates.discard(int(p))
        out.append(mates)
    return out


def board_mate_overlap(g: Any, seeds: Any, neighbors: Any, truth_groups: Any = None) -> dict[str, float]:
    """How much of a neighborhood is made of true board-mates.

    seeds: int [S]; neighbors: int [S, T] (-1 padded); g: the graph holding the *true* boards
    (all edges: held-out board-mates count, which the sampler may not have seen).
    Returns ``precision`` (mean share of the present neighbors that are board-mates),
    ``recall`` (mean of |neighbors & board-mates| / min(T, |board-mates|)), ``coverage`` (mean
    share of the T slots filled), ``num_seeds`` (seeds with >= 1 neighbor and >= 1 board-mate),
    and with ``truth_groups`` (int [P], e.g. the synthetic style * 12 + topic) ``group_precision``
    (share of neighbors in the seed's hidden group). NaN when no seed qualifies.
    """
    seeds = np.asarray(torch.as_tensor(seeds).cpu().numpy(), dtype=np.int64).reshape(-1)
    nb = np.asarray(torch.as_tensor(neighbors).cpu().numpy(), dtype=np.int64)
    mates = board_mate_sets(g, seeds)
    prec, rec, cov, grp = [], [], [], []
    T = nb.shape[1] if nb.ndim == 2 else 0
    for i, s in enumerate(seeds):
        row = nb[i][nb[i] >= 0]
        cov.append(row.size / T if T else 0.0)
        if row.size == 0 or not mates[i]:
            continue
        hits = sum(int(p) in mates[i] for p in row)
        prec.append(hits / row.size)
        rec.append(hits / min(T, len(mates[i])))
        if truth_groups is not None:
            tg = np.asarray(truth_groups)
            grp.append(float((tg[row] == tg[s]).mean()))
    nan = float("nan")
    out = {"precision": float(np.mean(prec)) if prec else nan, "recall": float(np.mean(rec)) if rec else nan,
           "coverage": float(np.mean(cov)) if cov else nan, "num_seeds": len(prec)}
    if truth_groups is not None:
        out["group_precision"] = float(np.mean(grp)) if grp else nan
    return out


def board_mate_marks(g: Any, seeds: Any, neighbors: Any) -> torch.Tensor:
    """bool [S, T]: True where ``neighbors[i, j]`` (int [S, T], -1 padded) shares a board with
    ``seeds[i]`` in ``g`` (all edges); False for padding."""
    seeds = np.asarray(torch.as_tensor(seeds).cpu().numpy(), dtype=np.int64).reshape(-1)
    nb = torch.as_tensor(neighbors).cpu()
    mates = board_mate_sets(g, seeds)
    out = torch.zeros(nb.shape, dtype=torch.bool)
    for i in range(seeds.size):
        for j, p in enumerate(nb[i].tolist()):
            out[i, j] = p >= 0 and p in mates[i]
    return out


def visit_frequency_by_rank(nb: Any) -> np.ndarray:
    """float64 [T]: mean over seeds of ``weights[:, r] / total_visits`` (the share of a seed's
    walk visits that went to its rank-r neighbor); seeds with no visits are left out."""
    w = nb.weights.double().cpu()
    tot = nb.total_visits.double().cpu()
    ok = tot > 0
    if not bool(ok.any()):
        return np.zeros(w.shape[1])
    return (w[ok] / tot[ok, None]).mean(0).numpy()


def plot_visit_frequencies(neighborhoods: Mapping[str, Any], figsize: tuple[float, float] = (5, 3.5)):
    """Figure: ``visit_frequency_by_rank`` of several samplers ({name: ImportanceNeighbors}) on
    log-log axes: how fast visits concentrate on the top neighbors."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=figsize)
    for name, nb in neighborhoods.items():
        f = visit_frequency_by_rank(nb)
        r = np.arange(1, f.size + 1)
        ok = f > 0
        ax.loglog(r[ok], f[ok], "o-", ms=3, label=name)
    ax.set_xlabel("neighbor rank")
    ax.set_ylabel("share of the seed's visits")
    ax.set_title("visit frequency by rank (mean over seeds)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def measure_throughput(fn: Callable[[torch.Tensor], Any], seeds: Any, batch_size: int = 256, repeats: int = 3,
                       warmup: int = 1) -> dict[str, float]:
    """Time ``fn(batch)`` over ``seeds`` (int [S]) cut into batches of ``batch_size``: ``warmup``
    untimed passes, then the best of ``repeats`` timed passes (the least disturbed by other work
    on the machine). Returns {"seeds_per_s", "seconds_per_batch", "batches", "best_s"}."""
    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    batches = [seeds[i:i + batch_size] for i in range(0, seeds.numel(), batch_size)]
    if not batches:
        raise ValueError("measure_throughput: no seeds")
    for _ in range(warmup):
        for b in batches:
            fn(b)
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return {"seeds_per_s": seeds.numel() / best if best > 0 else float("inf"),
            "seconds_per_batch": best / len(batches), "batches": len(batches), "best_s": best}


def overlap_sweep(g: Any, seeds: Any, restart_probs: Sequence[float], num_walks: Sequence[int],
                  preset: str = "pixie_restart", num_neighbors: int = 10, truth_groups: Any = None,
                  true_graph: Any = None, progress: bool = True) -> list[dict[str, Any]]:
    """Board-mate overlap of Pixie neighborhoods over a grid of ``restart_prob`` x ``num_walks``.

    Each cell loads ``preset`` (a sampler config name or path) with those two values and
    ``num_neighbors`` overridden, builds its sampler on ``g`` (its ``exclude_splits`` apply) and
    scores ``sample_neighborhoods(seeds)`` with ``board_mate_overlap`` against ``true_graph``
    (default ``g``: all edges). Returns one dict per cell: restart_prob, num_walks and the
    overlap keys."""
    from tqdm.auto import tqdm

    from sampling import build_sampler, load_sampler_config

    true_graph = g if true_graph is None else true_graph
    cells = [(float(r), int(w)) for r in restart_probs for w in num_walks]
    rows = []
    for r, w in tqdm(cells, desc="sweep", unit="cell", disable=not progress):
        cfg = load_sampler_config(preset, {"pixie.restart_prob": r, "pixie.num_walks": w,
                                           "pixie.num_neighbors": num_neighbors})
        nb = sample_neighborhoods(build_sampler(cfg, g), seeds, num_neighbors)
        rows.append({"restart_prob": r, "num_walks": w,
                     **board_mate_overlap(true_graph, seeds, nb.neighbors, truth_groups)})
    return rows


def plot_overlap_sweep(rows: Sequence[Mapping[str, Any]], metric: str = "precision", figsize=(5, 3.5)):
    """Figure: heatmap of ``metric`` over restart probability (rows) x walks per query (columns)."""
    plt = _plt()
    rs = sorted({float(r["restart_prob"]) for r in rows})
    ws = sorted({int(r["num_walks"]) for r in rows})
    grid = np.full((len(rs), len(ws)), np.nan)
    for r in rows:
        grid[rs.index(float(r["restart_prob"])), ws.index(int(r["num_walks"]))] = r[metric]
    fig, ax = plt.subplots(figsize=figsize)
    im = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for i in range(len(rs)):
        for j in range(len(ws)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center",
                        color="white" if grid[i, j] < 0.6 else "black", fontsize=8)
    ax.set_xticks(range(len(ws)), [str(w) for w in ws])
    ax.set_yticks(range(len(rs)), [f"{r:g}" for r in rs])
    ax.set_xlabel("walks per query")
    ax.set_ylabel("restart probability")
    ax.set_title(f"board-mate {metric} of the top neighbors")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ training
@functools.lru_cache(maxsize=None)
def _trainer_class():
    from training.trainer import Trainer

    class CallbackTrainer(Trainer):
        """``training.trainer.Trainer`` that calls ``callbacks`` after every optimizer step with
        ``(step, terms)``: step int (1-based, the step just done), terms {name: float} (the loss
        terms, ``grad_norm``, ``lr``, ``skipped``). Everything else is the Trainer's."""

        def __init__(self, *args: Any, callbacks: Iterable[Callable[[int, dict], Any]] = (), **kwargs: Any):
            super().__init__(*args, **kwargs)
            self.callbacks = list(callbacks)

        def train_step(self, batch: Any) -> dict[str, Any]:
            out = super().train_step(batch)
            for cb in self.callbacks:
                cb(self.step + 1, out)
            return out

    return CallbackTrainer


def __getattr__(name: str) -> Any:  # CallbackTrainer is built lazily (the trainer imports a lot)
    if name == "CallbackTrainer":
        return _trainer_class()
    raise AttributeError(name)


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
        plt = _plt()
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
        image = Image(data=_png(self.figure()), format="png")   # a PNG whatever the backend
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
    after every step (``CallbackTrainer``). With ``reuse``, a run that already finished there
    (``summary.json`` at ``train.max_steps``) is not trained again and an unfinished one is
    resumed. Returns the run summary (``RUN_DIR/summary.json``)."""
    from training.config import load_train_config

    run_dir = Path(run_dir)
    trainer_cls = _trainer_class()
    summary_path = run_dir / "summary.json"
    if reuse and (run_dir / "config.yaml").is_file():
        cfg = load_train_config(run_dir / "config.yaml")
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if int(summary.get("steps", -1)) >= int(cfg.train.max_steps):
                print(f"{run_dir}: finished run reused ({summary['steps']} steps)")
                return summary
        return trainer_cls(None, run_dir, resume=True, callbacks=callbacks).train()
    cfg = load_train_config(config, list(overrides))
    return trainer_cls(cfg, run_dir, callbacks=callbacks).train()


def read_losses(run_dir: str | os.PathLike, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """{"step": int64 [N], term: float64 [N] ...} from ``RUN_DIR/metrics.jsonl`` (every
    ``*loss`` term, or ``keys``); a term missing from a line is NaN. Safe while training runs
    (a torn last line is skipped)."""
    from training.logging_utils import read_jsonl

    recs = read_jsonl(Path(run_dir) / "metrics.jsonl")
    names = list(keys) if keys else sorted({k for r in recs for k in r if k.endswith("loss")})
    out = {"step": np.array([int(r["step"]) for r in recs], dtype=np.int64)}
    for k in names:
        out[k] = np.array([float(r.get(k, "nan")) for r in recs], dtype=np.float64)
    return out


def plot_loss_curves(runs: Mapping[str, str | os.PathLike], keys: Sequence[str] = ("loss",), figsize=(6, 3.5)):
    """Figure: ``keys`` terms of several runs ({label: run_dir}) from their metrics.jsonl."""
    plt = _plt()
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
    import re
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
    from training.evaluation.run_eval import truth_labels
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
    from training.evaluation.plots import pca_2d
    plt = _plt()
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
