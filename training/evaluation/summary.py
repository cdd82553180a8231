"""One method's headline metrics (the ``metrics.json`` keys of DESIGN.md) from pin embeddings.

``method_metrics(g, emb)`` with ``g`` a ``PinBoardGraph`` with splits and ``emb`` a dict of
float [P, D] tensors (any of ``"image"``, ``"text"``, ``"fused"``):

* ``t2i_recall@1|5|10``, ``i2t_recall@1|5|10``: text -> image and image -> text, pin i's text
  paired with pin i's image, among warm pins with both (``has_image`` / ``has_text`` masks;
  rows of zero norm count as missing); needs "image" and "text". Training saw these very pairs,
  so a model that memorizes its training images scores above what it generalizes:
* ``cold_start_t2i_recall@1|5|10``, ``cold_start_i2t_recall@1|5|10``: the same among the
  cold-start pins, whose images and text no training step saw (a smaller pool: compare methods
  with each other, not with the warm numbers).
* ``board_recall@10`` (hit rate: >= 1 board mate in the top 10), ``board_mrr`` (tie-aware):
  pin -> pin retrieval on the "fused" embedding (else "graph", else "image", else "text"). Queries: pins of the
  TEST edges; positives of (p, b): the pins with a TRAIN edge to b; candidates: every supported
  pin but p.
* ``cold_start_board_recall@10``: the same for the edges of cold-start pins (COLD split); None
  when the method does not support cold-start pins (``supported`` False for them).
* ``neighbor_overlap@10``: overlap of the 10 embedding nearest neighbors with the PinSage
  top-10 random-walk neighborhood on the TRAIN graph, for up to ``max_overlap_seeds`` warm pins.
* ``t2i_topic_precision@10`` (only with ``topics``, the hidden topic per pin of the synthetic
  world): for each caption query of the text -> image protocol, the share of its top-10 images
  whose pin has the query pin's topic (queries of unknown topic are skipped); with it
  ``t2i_recall@10_topic_ceiling``: the exact-pin t2i recall@10 a model reaches at best when a
  caption tells only its topic, mean over queries of min(1, 10 / same-topic images in the pool),
  and ``t2i_topic_pins_per_topic``: the mean over queries of those same-topic images.

``pin_embedding`` chooses the embedding of pin -> pin retrieval (default: the first of
``PIN_EMBEDDING_ORDER`` present). ``per_query`` (a dict) is filled with the values behind each
metric of ``training.evaluation.per_query.PER_QUERY_METRICS`` it computed: ``{metric: (pins
int64 [Q], values float64 [Q])}``.

Metrics a method cannot produce are left out (or None for cold start), never made up.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from graph.splits import COLD, TEST, TRAIN
from training.evaluation.neighborhood import walk_neighbor_overlap
from training.evaluation.retrieval import board_mate_positives, exact_topk, image_text_retrieval, pin_retrieval

__all__ = ["method_metrics", "headline_metrics", "board_recall_on_split", "HEADLINE_KEYS", "PIN_EMBEDDING_ORDER"]

# The metrics.json keys of DESIGN.md, in table order.
HEADLINE_KEYS = ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "i2t_recall@5", "i2t_recall@10",
                 "board_recall@10", "board_mrr", "cold_start_board_recall@10", "neighbor_overlap@10")
# Which embedding represents a pin in pin -> pin retrieval when a method has several.
PIN_EMBEDDING_ORDER = ("fused", "graph", "image", "text")


def headline_metrics(metrics: dict[str, float | None]) -> dict[str, float | None]:
    """The DESIGN.md metrics.json subset of ``metrics`` (keys a method lacks are left out)."""
    return {k: metrics[k] for k in HEADLINE_KEYS if k in metrics}


def method_metrics(g: Any, emb: dict[str, torch.Tensor], supported: torch.Tensor | None = None,
                   has_image: torch.Tensor | None = None, has_text: torch.Tensor | None = None,
                   k: int = 10, max_overlap_seeds: int = 500, seed: int = 0,
                   backend: str = "auto", curve_ks: Sequence[int] = (), pin_embedding: str | None = None,
                   per_query: dict | None = None, topics: Any = None) -> dict[str, float | None]:
    """See the module docstring. supported: bool [P] (default all): pins the method can embed;
    unsupported pins are removed from the candidates and queries. curve_ks: extra cutoffs at
    which every recall is also reported (``board_recall@20`` ..., for recall@k curves).
    pin_embedding: the key of ``emb`` used for pin -> pin retrieval; per_query: a dict to fill
    with per-query values; topics: int [P] hidden topic per pin (-1 unknown) for the topic-level
    text -> image precision."""
    P = g.num_pins
    sup = torch.ones(P, dtype=torch.bool) if supported is None else torch.as_tensor(supported).bool().cpu()
    cold = g.splits.is_cold_start(P)
    out: dict[str, float | None] = {}

    def masked(x: torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(x).detach().float().cpu().clone()
        x[~sup] = 0
        return x

    if "image" in emb and "text" in emb:
        img, txt = masked(emb["image"]), masked(emb["text"])
        both = sup & (img.norm(dim=1) > 0) & (txt.norm(dim=1) > 0)
        if has_image is not None:
            both &= torch.as_tensor(has_image).bool()
        if has_text is not None:
            both &= torch.as_tensor(has_text).bool()
        for ok, prefix in ((both & ~cold, ""), (both & cold, "cold_start_")):
            idx = torch.nonzero(ok).squeeze(1)
            if not idx.numel():
                continue
            pq: dict = {}
            m = image_text_retrieval(img[idx], txt[idx], ks=sorted({1, 5, 10, *curve_ks}), backend=backend,
                                     per_query=pq)
            out.update({f"{prefix}{key}": m[key] for key in m if "recall@" in key and "frac" not in key})
            if per_query is not None:
                for d in ("t2i_", "i2t_"):
                    if f"{d}recall@{k}" in pq:
                        per_query[f"{prefix}{d}recall@{k}"] = (idx[torch.from_numpy(pq[f"{d}rows"])].numpy(),
                                                                pq[f"{d}recall@{k}"])
            if topics is not None and not prefix:
                out.update(_topic_precision(img[idx], txt[idx], idx, np.asarray(topics), k, backend, per_query))

    if pin_embedding is not None and pin_embedding not in emb:
        raise KeyError(f"pin_embedding={pin_embedding!r}: the method has only {sorted(emb)}")
    name = pin_embedding or next((n for n in PIN_EMBEDDING_ORDER if n in emb), None)
    if name is None:
        return out
    e = masked(emb[name])
    pins, boards = g.edges()
    split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
    train = split == TRAIN
    tp, tb = pins[train], boards[train]
    for part, sel, prefix in (("warm", split == TEST, "board_"), ("cold", split == COLD, "cold_start_board_")):
        sel = sel & sup[pins]                      # unsupported pins are not queried
        if not bool(sel.any()):
            out[f"{prefix}recall@{k}"] = None
            if part == "warm":
                out["board_mrr"] = None
            continue
        qp, pos = board_mate_positives(pins[sel], boards[sel], tp, tb, num_pins=P)
        pq = {}
        m = pin_retrieval(e, qp, pos, ks=sorted({k, *curve_ks}), backend=backend, prefix=prefix, per_query=pq)
        out.update({key: v for key, v in m.items() if key.startswith(f"{prefix}recall@")})
        if part == "warm":
            out["board_mrr"] = m["board_mrr"]
        if per_query is not None and f"{prefix}rows" in pq:
            qpins = qp[torch.from_numpy(pq[f"{prefix}rows"])].numpy()
            per_query[f"{prefix}recall@{k}"] = (qpins, pq[f"{prefix}recall@{k}"])
            if part == "warm":
                per_query["board_mrr"] = (qpins, pq[f"{prefix}mrr"])
    warm = torch.nonzero(sup & ~cold & (g.pin_degrees() > 0)).squeeze(1)
    if warm.numel() and max_overlap_seeds > 0:   # 0: skip (it builds the train graph and walks)
        gen = torch.Generator().manual_seed(seed)
        seeds = warm[torch.randperm(warm.numel(), generator=gen)[:max_overlap_seeds]]
        out[f"neighbor_overlap@{k}"] = walk_neighbor_overlap(e, g.train_graph(), seeds, k=k, seed=seed)
    return out


def _topic_precision(img: torch.Tensor, txt: torch.Tensor, pins: torch.Tensor, topics: np.ndarray, k: int,
                     backend: str, per_query: dict | None) -> dict[str, float]:
    """``t2i_topic_precision@k`` and ``t2i_recall@k_topic_ceiling`` (module docstring) of the
    image-text pool ``pins`` (rows of img / txt)."""
    top = pins.numpy()
    lab = topics[top]
    known = np.nonzero(lab >= 0)[0]
    if known.size == 0:
        return {}
    _, nn = exact_topk(txt[known], img, k, backend=backend)
    nn = nn.numpy()
    got = np.where(nn >= 0, lab[np.clip(nn, 0, None)], -2)
    prec = (got == lab[known][:, None]).sum(axis=1) / float(k)
    sizes = np.bincount(lab[lab >= 0])
    ceiling = np.minimum(1.0, k / sizes[lab[known]])
    if per_query is not None:
        per_query[f"t2i_topic_precision@{k}"] = (top[known], prec.astype(np.float64))
    return {f"t2i_topic_precision@{k}": float(prec.mean()), f"t2i_recall@{k}_topic_ceiling": float(ceiling.mean()),
            "t2i_topic_pins_per_topic": float(sizes[lab[known]].mean())}


def board_recall_on_split(g: Any, e: torch.Tensor, split_code: int, supported: torch.Tensor | None = None,
                          k: int = 10, backend: str = "auto") -> float | None:
    """Board-mate recall@k (the protocol of ``board_recall@10``) with the edges of another split
    as queries, e.g. ``graph.splits.VAL`` to choose a head without looking at test edges; None
    when the split has no edge of a supported pin."""
    P = g.num_pins
    sup = torch.ones(P, dtype=torch.bool) if supported is None else torch.as_tensor(supported).bool().cpu()
    e = torch.as_tensor(e).detach().float().cpu().clone()
    e[~sup] = 0
    pins, boards = g.edges()
    split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
    sel = (split == split_code) & sup[pins]
    if not bool(sel.any()):
        return None
    train = split == TRAIN
    qp, pos = board_mate_positives(pins[sel], boards[sel], pins[train], boards[train], num_pins=P)
    if int((pos.counts() > 0).sum()) == 0:
        return None
    m = pin_retrieval(e, qp, pos, ks=[k], backend=backend, prefix="", mrr=False, ndcg=False)
    return m[f"recall@{k}"]
