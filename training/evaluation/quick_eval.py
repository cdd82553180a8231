"""Quick retrieval checks run by the trainer (``eval`` section) on held-out data.

Given embeddings of every pin ([P, D], L2-normalized) and the graph with its splits:

* ``board_centroid_recall@K``: for each held-out (val + test) edge (pin p, board b), boards are
  ranked by the cosine between p's embedding and each board's centroid (normalized mean embedding
  of the board's *training* pins); boards p already has a training edge to are skipped (filtered
  ranking). Recall@K: the share of held-out edges whose board ranks in the top K. (Not the
  ``board_recall@K`` of ``pinclip evaluate``, which is pin -> pin retrieval of board mates on the
  test edges: ``training.evaluation.summary``; the two are not comparable.)
* ``cold_start_board_centroid_recall@K``: the same for the edges of cold-start pins (never seen in
  training: content only, no filtering).
* ``t2i_recall@1`` / ``t2i_recall@K``: text -> image retrieval among up to ``max_queries`` warm
  pins with both a non-empty caption and an image (the dataset's ``image`` column, and not in
  ``image_missing``); None when fewer than two pins have both (e.g. a world without images, where
  every image embedding is the same and any ranking would read as perfect).

Board metrics are computed with the fused embedding (``...``) and the image-only embedding
(``..._image``). Everything is a few matrix products: seconds on a CPU for the demo world.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from graph.splits import COLD, TEST, VAL

__all__ = ["board_centroids", "board_centroid_recall", "quick_eval"]


def board_centroids(emb: torch.Tensor, pins: torch.Tensor, boards: torch.Tensor, num_boards: int) -> torch.Tensor:
    """float32 [B, D]: normalized mean of ``emb[pins]`` per board (zero rows for empty boards)."""
    c = torch.zeros(num_boards, emb.shape[1], dtype=torch.float32)
    c.index_add_(0, boards, emb[pins].float())
    return F.normalize(c, dim=1)


def board_centroid_recall(query: torch.Tensor, target: torch.Tensor, centroids: torch.Tensor, k: int,
                 exclude: tuple[torch.Tensor, torch.Tensor] | None = None, chunk: int = 4096) -> float:
    """Share of rows whose ``target`` board ranks in the top ``k`` by ``query @ centroids.T``.
    exclude: (row, board) pairs to skip in the ranking."""
    if query.shape[0] == 0:
        return float("nan")
    hits = 0
    for lo in range(0, query.shape[0], chunk):
        hi = min(lo + chunk, query.shape[0])
        scores = query[lo:hi].float() @ centroids.T
        if exclude is not None:
            rows, cols = exclude
            sel = (rows >= lo) & (rows < hi)
            scores[rows[sel] - lo, cols[sel]] = float("-inf")
        t = target[lo:hi]
        own = scores.gather(1, t[:, None])
        rank = (scores > own).sum(dim=1)
        hits += int((rank < k).sum())
    return hits / query.shape[0]


def quick_eval(g: Any, emb: dict[str, torch.Tensor], k: int = 10, max_queries: int | None = 2000,
               seed: int = 0, image_missing: torch.Tensor | None = None) -> dict[str, float | None]:
    """The metrics of the module docstring. ``emb``: {"image", "text", "fused"} float [P, D];
    image_missing: bool [P] pins encoded without an image (beyond those the dataset has none for)."""
    pins, boards = g.edges()
    split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
    train = split == 0
    gen = torch.Generator().manual_seed(seed)

    def cap(idx: torch.Tensor) -> torch.Tensor:
        if max_queries is not None and idx.shape[0] > max_queries:
            idx = idx[torch.randperm(idx.shape[0], generator=gen)[:max_queries]].sort().values
        return idx

    held = cap(torch.nonzero((split == VAL) | (split == TEST)).flatten())
    cold = cap(torch.nonzero(split == COLD).flatten())
    out: dict[str, float] = {"num_heldout_edges": int(held.shape[0]), "num_cold_start_edges": int(cold.shape[0])}
    tp, tb = pins[train], boards[train]
    for name, key in (("", "fused"), ("_image", "image")):
        e = emb[key]
        cent = board_centroids(e, tp, tb, g.num_boards)
        # Filtered ranking: a held-out query skips the boards its pin already has in training.
        qp = pins[held]
        order = torch.argsort(tp)
        sp = tp[order]
        lo = torch.searchsorted(sp, qp)
        hi = torch.searchsorted(sp, qp, right=True)
        rows = torch.repeat_interleave(torch.arange(qp.shape[0]), hi - lo)
        starts = torch.repeat_interleave(lo, hi - lo)
        offs = torch.arange(rows.shape[0]) - torch.repeat_interleave(torch.cumsum(hi - lo, 0) - (hi - lo), hi - lo)
        cols = tb[order][starts + offs]
        out[f"board_centroid_recall@{k}{name}"] = board_centroid_recall(e[qp], boards[held], cent, k, (rows, cols))
        out[f"cold_start_board_centroid_recall@{k}{name}"] = board_centroid_recall(e[pins[cold]], boards[cold],
                                                                                   cent, k)
    # Text -> image among warm pins with a non-empty caption and an image.
    ok = ~g.splits.is_cold_start(g.num_pins)
    if g.features is None:
        ok = torch.zeros_like(ok)
    else:
        ok &= torch.tensor([t is not None and t != "" for t in g.features.pin_text(np.arange(g.num_pins))],
                           dtype=torch.bool)
        ok &= torch.from_numpy(np.asarray(g.features.pins.column("image").is_valid(), dtype=bool))
    if image_missing is not None:
        ok &= ~torch.as_tensor(image_missing).bool()
    cand = cap(torch.nonzero(ok).flatten())
    out["t2i_recall@1"] = out[f"t2i_recall@{k}"] = None
    if cand.shape[0] > 1:
        sims = emb["text"][cand].float() @ emb["image"][cand].float().T
        own = sims.diagonal()[:, None]
        rank = (sims > own).sum(dim=1)
        out["t2i_recall@1"] = float((rank < 1).float().mean())
        out[f"t2i_recall@{k}"] = float((rank < k).float().mean())
    return out
