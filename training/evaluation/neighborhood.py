"""Neighborhood quality of pin embeddings.

* ``neighbor_overlap``: overlap@k between each pin's k embedding nearest neighbors and its
  random-walk importance neighborhood (top-T of ``sampling.PinSageSampler``).
* ``board_coherence``: mean intra-board cosine minus mean inter-board cosine.
* ``alignment`` / ``uniformity``: Wang & Isola (2020) on L2-normalized embeddings.
* ``purity_at_k`` / ``synthetic_purity``: share of the k nearest neighbors with the same hidden
  label (topic, style, topic+style of the synthetic world, ``graph.synth.read_truth``).

Embeddings are float [P, D]; they are L2-normalized here (cosine geometry).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from sampling import PinSageSampler
from training.evaluation.retrieval import exact_topk

__all__ = ["knn", "neighbor_overlap", "walk_neighbor_overlap", "board_coherence", "alignment",
           "uniformity", "purity_at_k", "synthetic_purity"]


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(torch.as_tensor(x).detach().float().cpu(), dim=1)


def knn(emb: torch.Tensor, query_pins: Any, k: int, backend: str = "auto") -> torch.Tensor:
    """int64 [Q, k]: the k nearest pins (cosine) of each query pin, itself excluded (-1 padded)."""
    e = _norm(emb)
    qp = torch.as_tensor(np.asarray(query_pins), dtype=torch.int64)
    return exact_topk(e[qp], e, k, exclude=qp, backend=backend)[1]


def neighbor_overlap(emb: torch.Tensor, seeds: Any, walk_neighbors: torch.Tensor, k: int = 10,
                     backend: str = "auto") -> float:
    """overlap@k: mean over seeds of |kNN_k(seed) & walk(seed)| / min(k, |walk(seed)|).

    seeds: int64 [S] pins; walk_neighbors: int64 [S, T] random-walk neighbors (-1 padded, e.g.
    ``PinSageSampler.sample(seeds).neighbors``). Seeds without walk neighbors are skipped (NaN
    when none remain).
    """
    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    wn = torch.as_tensor(walk_neighbors, dtype=torch.int64).cpu()
    nn_ = knn(emb, seeds, k, backend)
    vals = []
    for i in range(seeds.numel()):
        w = wn[i][(wn[i] >= 0) & (wn[i] != seeds[i])]
        if w.numel() == 0:
            continue
        n = nn_[i][nn_[i] >= 0]
        vals.append(float(torch.isin(n, w).sum()) / min(k, w.numel()))
    return float(np.mean(vals)) if vals else float("nan")


def walk_neighbor_overlap(emb: torch.Tensor, graph: Any, seeds: Any, k: int = 10, num_neighbors: int | None = None,
                          num_random_walks: int = 200, num_traversals: int = 3, termination_prob: float = 0.5,
                          seed: int = 0) -> float:
    """``neighbor_overlap`` against ``PinSageSampler(graph, ...)`` top-T neighborhoods
    (T = ``num_neighbors``, default k). Pass the graph the walks should see (e.g. all edges, or
    the train graph)."""
    s = PinSageSampler(graph, num_traversals=num_traversals, termination_prob=termination_prob,
                       num_random_walks=num_random_walks, num_neighbors=num_neighbors or k, seed=seed)
    seeds = torch.as_tensor(np.asarray(seeds), dtype=torch.int64)
    nb = s.sample(seeds)
    return neighbor_overlap(emb, seeds, nb.neighbors, k)


def board_coherence(emb: torch.Tensor, pins: Any, boards: Any) -> dict[str, float]:
    """Board coherence from an edge list (pins, boards int [E], one edge per (pin, board)).

    intra: mean cosine over ordered pairs of distinct edges on the same board; inter: mean cosine
    over pairs of edges on different boards (exact, via per-board sums: O(E * D)); a pin saved to
    two boards contributes its self-similarity to inter. Returns {"intra", "inter", "coherence" =
    intra - inter}.
    """
    e = _norm(emb).double()
    p = torch.as_tensor(np.asarray(pins), dtype=torch.int64)
    b = torch.as_tensor(np.asarray(boards), dtype=torch.int64)
    _, b = torch.unique(b, return_inverse=True)
    nb = int(b.max()) + 1 if b.numel() else 0
    x = e[p]
    sums = torch.zeros(nb, e.shape[1], dtype=torch.float64).index_add_(0, b, x)
    n = torch.bincount(b, minlength=nb).double()
    self_sim = (x * x).sum(1)
    self_per_board = torch.zeros(nb, dtype=torch.float64).index_add_(0, b, self_sim)
    intra_sum = float(((sums * sums).sum(1) - self_per_board).sum())
    intra_cnt = float((n * (n - 1)).sum())
    total = sums.sum(0)
    inter_sum = float((total * total).sum()) - float((sums * sums).sum())
    E = float(n.sum())
    inter_cnt = E * E - float((n * n).sum())
    intra = intra_sum / intra_cnt if intra_cnt else float("nan")
    inter = inter_sum / inter_cnt if inter_cnt else float("nan")
    return {"intra": intra, "inter": inter, "coherence": intra - inter}


def alignment(x: torch.Tensor, y: torch.Tensor, alpha: float = 2.0) -> float:
    """E ||f(x) - f(y)||^alpha over positive pairs (rows of x [N, D] and y [N, D]); lower is better."""
    return float((_norm(x) - _norm(y)).norm(dim=1).pow(alpha).mean())


def uniformity(x: torch.Tensor, t: float = 2.0, max_points: int = 4096, seed: int = 0) -> float:
    """log E exp(-t ||f(x_i) - f(x_j)||^2) over pairs i < j (of at most ``max_points`` rows drawn
    with ``seed``); lower is more uniform."""
    e = _norm(x)
    if e.shape[0] > max_points:
        g = torch.Generator().manual_seed(seed)
        e = e[torch.randperm(e.shape[0], generator=g)[:max_points]]
    d = torch.pdist(e.double()).pow(2)
    return float(torch.logsumexp(-t * d, 0) - np.log(d.numel()))


def purity_at_k(emb: torch.Tensor, labels: Any, k: int = 10, query_pins: Any = None,
                backend: str = "auto") -> float:
    """Mean over query pins of the share of their k nearest neighbors with the same label.

    labels: int [P] (-1 = unknown: such pins are neither queries nor counted as a match).
    query_pins: int64 [Q] (default: every labelled pin).
    """
    lab = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if query_pins is None:
        query_pins = torch.nonzero(lab >= 0).squeeze(1)
    qp = torch.as_tensor(np.asarray(query_pins), dtype=torch.int64)
    qp = qp[lab[qp] >= 0]
    if qp.numel() == 0:
        return float("nan")
    nn_ = knn(emb, qp, k, backend)
    valid = nn_ >= 0
    same = (lab[nn_.clamp(min=0)] == lab[qp][:, None]) & valid
    return float((same.sum(1).double() / valid.sum(1).clamp(min=1).double()).mean())


def synthetic_purity(emb: torch.Tensor, truth: Any, k: int = 10, query_pins: Any = None) -> dict[str, float]:
    """purity@k w.r.t. the synthetic world's hidden topic, style and topic+style.

    truth: a ``graph.synth.SynthTruth`` (``read_truth(dataset_dir)``). Returns
    {"topic_purity@k", "style_purity@k", "topic_style_purity@k"}.
    """
    topic = np.asarray(truth.pin_topic, dtype=np.int64)
    style = np.asarray(truth.pin_style, dtype=np.int64)
    both = topic * (int(style.max()) + 1 if style.size else 1) + style
    return {f"topic_purity@{k}": purity_at_k(emb, topic, k, query_pins),
            f"style_purity@{k}": purity_at_k(emb, style, k, query_pins),
            f"topic_style_purity@{k}": purity_at_k(emb, both, k, query_pins)}
