"""Sampler comparisons: neighborhoods, overlap with board mates, visit frequencies, throughput, sweeps."""
from __future__ import annotations

import copy
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from sampling import ImportanceNeighbors, PinSageSampler, PixieSampler, build_sampler, load_sampler_config
from sampling.neighborhoods import count_visits, top_per_row
from training.notebook_utils.display import pyplot


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
        sg = getattr(sampler, "graph", None)   # RandomWalkSampler; a plain callable has none
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
    plt = pyplot()
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
    plt = pyplot()
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
