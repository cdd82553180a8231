"""Exact nearest-neighbor retrieval metrics with bounded memory.

Scores are inner products ``query @ corpus.T`` (cosine when both are L2-normalized). The full
[Q, N] score matrix is never built: queries are processed ``query_chunk`` rows at a time and the
corpus ``corpus_chunk`` rows at a time; per-chunk top-k lists are merged.

Positives are given per query as a ``Positives`` CSR (``indptr`` int64 [Q + 1], ``indices`` int64
[nnz] of corpus rows), or anything ``as_positives`` accepts (list of lists, (indptr, indices)).

Metrics (``retrieval_metrics``), averaged over queries with >= 1 positive:

* ``recall@k``: hit rate, the share of queries with at least one positive in the top k
  (CLIP_benchmark semantics for several positives per query).
* ``recall_frac@k``: the mean over queries of |positives in top k| / |positives|.
* ``ndcg@k``: binary-gain NDCG of the top-k list (ideal DCG: min(|positives|, k) hits first).
* ``mrr``: mean reciprocal rank of the first positive, tie-aware: with ``g`` non-positive
  candidates scoring strictly above the best positive score ``s``, and ``t_neg`` non-positives and
  ``t_pos`` positives scoring exactly ``s``, the rank is the expected rank under random
  tie-breaking, ``g + 1 + t_neg / (t_pos + 1)``; the reciprocal of that rank is averaged.

Candidates: ``exclude`` (int64 [Q], -1 = none) removes one corpus row per query (the query pin
itself in pin -> pin retrieval). Corpus rows with zero norm (e.g. a pin without text in the
frozen-text baseline) are never retrieved (score -inf); a positive with zero norm therefore
never counts as found.

Top-k lists come from torch (exact, chunked) or faiss (``IndexFlatIP``, exact) with
``backend="auto"`` choosing faiss when it imports and the corpus has >= ``FAISS_MIN_CORPUS``
rows. The tie-aware rank (MRR) is always counted exactly with torch in chunks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from training.faiss_probe import faiss_available  # the one faiss probe; re-exported here

__all__ = ["Positives", "as_positives", "exact_topk", "retrieval_metrics", "expected_first_positive_rank", "image_text_retrieval",
           "board_mate_positives", "pin_retrieval", "faiss_available", "FAISS_MIN_CORPUS"]

# Measured on the 2-core dev CPU (1,000 queries x 100,000 rows, D=64, top-10): torch chunks 0.39 s,
# faiss IndexFlatIP 0.68 s; both are exact, so "auto" keeps torch until corpora this large.
FAISS_MIN_CORPUS = 1_000_000
_NEG_INF = float("-inf")


@dataclass(frozen=True)
class Positives:
    """Positive corpus rows per query: ``indptr`` int64 [Q + 1], ``indices`` int64 [nnz]."""
    indptr: torch.Tensor
    indices: torch.Tensor

    @property
    def num_queries(self) -> int:
        return int(self.indptr.numel() - 1)

    def counts(self) -> torch.Tensor:
        """int64 [Q]: positives per query."""
        return self.indptr[1:] - self.indptr[:-1]

    def rows(self) -> torch.Tensor:
        """int64 [nnz]: the query of each entry."""
        return torch.repeat_interleave(torch.arange(self.num_queries), self.counts())

    def transpose(self, num_corpus: int) -> "Positives":
        """Positives of the reverse direction (corpus rows become queries), [num_corpus] queries."""
        rows, cols = self.rows(), self.indices
        order = torch.argsort(cols * max(self.num_queries, 1) + rows)
        counts = torch.bincount(cols, minlength=num_corpus)
        indptr = torch.zeros(num_corpus + 1, dtype=torch.int64)
        indptr[1:] = torch.cumsum(counts, 0)
        return Positives(indptr, rows[order])


def as_positives(pos: Any, num_queries: int | None = None) -> Positives:
    """A ``Positives`` from a ``Positives``, an (indptr, indices) pair or a list of lists of ids."""
    if isinstance(pos, Positives):
        out = pos
    elif isinstance(pos, tuple) and len(pos) == 2 and not isinstance(pos[0], (list, tuple)):
        out = Positives(torch.as_tensor(np.asarray(pos[0]), dtype=torch.int64),
                        torch.as_tensor(np.asarray(pos[1]), dtype=torch.int64))
    else:
        lists = [np.unique(np.asarray(p, dtype=np.int64)) for p in pos]
        counts = np.array([len(p) for p in lists], dtype=np.int64)
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        flat = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, np.int64)
        out = Positives(torch.from_numpy(indptr), torch.from_numpy(flat))
    if num_queries is not None and out.num_queries != num_queries:
        raise ValueError(f"positives: {out.num_queries} queries, expected {num_queries}")
    return out


def _prep(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D [rows, dim] tensor, got shape {list(x.shape)}")
    return x.detach().float().cpu().contiguous()


def _chunk_scores(q: torch.Tensor, c: torch.Tensor, c0: int, exclude: torch.Tensor | None,
                  invalid: torch.Tensor) -> torch.Tensor:
    """float32 [qc, cc] scores with excluded / zero-norm corpus rows at -inf."""
    s = q @ c.T
    s[:, invalid[c0:c0 + c.shape[0]]] = _NEG_INF
    if exclude is not None:
        sel = (exclude >= c0) & (exclude < c0 + c.shape[0])
        r = torch.nonzero(sel).squeeze(1)
        s[r, exclude[r] - c0] = _NEG_INF
    return s


def _resolve_backend(backend: str, n: int) -> str:
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend={backend!r}: expected 'auto', 'torch' or 'faiss'")
    if backend == "auto":
        return "faiss" if n >= FAISS_MIN_CORPUS and faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise ImportError("backend='faiss' but faiss does not import (pip install faiss-cpu)")
    return backend


def exact_topk(query: torch.Tensor, corpus: torch.Tensor, k: int, exclude: torch.Tensor | None = None,
               query_chunk: int = 1024, corpus_chunk: int = 16384,
               backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-``k`` corpus rows per query by inner product.

    Args:
      query: float [Q, D]; corpus: float [N, D] (compared in float32 on the CPU).
      k: list length; clipped to N.
      exclude: int64 [Q] corpus row to skip per query (-1: none), e.g. the query itself.
      query_chunk, corpus_chunk: memory bound, at most ``query_chunk * (corpus_chunk + k)``
        scores are held at a time.
      backend: "torch", "faiss" (IndexFlatIP) or "auto" (see the module docstring).

    Returns (scores float32 [Q, k], indices int64 [Q, k]) in descending score order; slots that
    have no valid candidate hold score -inf and index -1.
    """
    q, c = _prep(query, "query"), _prep(corpus, "corpus")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"query dim {q.shape[1]} != corpus dim {c.shape[1]}")
    Q, N = q.shape[0], c.shape[0]
    k = min(int(k), N)
    invalid = c.norm(dim=1) == 0
    if exclude is not None:
        exclude = torch.as_tensor(exclude, dtype=torch.int64).cpu()
    if _resolve_backend(backend, N) == "faiss":
        return _faiss_topk(q, c, k, exclude, invalid)
    out_s = torch.full((Q, k), _NEG_INF)
    out_i = torch.full((Q, k), -1, dtype=torch.int64)
    for q0 in range(0, Q, query_chunk):
        qq = q[q0:q0 + query_chunk]
        ex = None if exclude is None else exclude[q0:q0 + query_chunk]
        best_s = torch.full((qq.shape[0], 0), _NEG_INF)
        best_i = torch.zeros((qq.shape[0], 0), dtype=torch.int64)
        for c0 in range(0, N, corpus_chunk):
            s = _chunk_scores(qq, c[c0:c0 + corpus_chunk], c0, ex, invalid)
            ts, ti = torch.topk(s, min(k, s.shape[1]), dim=1)
            best_s = torch.cat([best_s, ts], 1)
            best_i = torch.cat([best_i, ti + c0], 1)
            if best_s.shape[1] > k:
                best_s, j = torch.topk(best_s, k, dim=1)
                best_i = best_i.gather(1, j)
        best_i = torch.where(torch.isinf(best_s), torch.full_like(best_i, -1), best_i)
        out_s[q0:q0 + qq.shape[0]] = best_s
        out_i[q0:q0 + qq.shape[0]] = best_i
    return out_s, out_i


def _faiss_topk(q, c, k, exclude, invalid):
    import faiss
    index = faiss.IndexFlatIP(c.shape[1])
    valid = torch.nonzero(~invalid).squeeze(1)
    index.add(c[valid].numpy())
    extra = 1 if exclude is not None else 0
    kk = min(k + extra, int(valid.numel()))
    if kk == 0:
        return torch.full((q.shape[0], k), _NEG_INF), torch.full((q.shape[0], k), -1, dtype=torch.int64)
    d, i = index.search(q.numpy(), kk)
    s, idx = torch.from_numpy(d).float(), torch.from_numpy(i).long()
    idx = torch.where(idx >= 0, valid[idx.clamp(min=0)], torch.full_like(idx, -1))
    s = torch.where(idx >= 0, s, torch.full_like(s, _NEG_INF))
    if exclude is not None:
        drop = idx == exclude[:, None]
        s = torch.where(drop, torch.full_like(s, _NEG_INF), s)
        s, j = torch.sort(s, dim=1, descending=True, stable=True)
        idx = idx.gather(1, j)
        idx = torch.where(torch.isinf(s), torch.full_like(idx, -1), idx)
    s, idx = s[:, :k], idx[:, :k]
    if s.shape[1] < k:
        pad = k - s.shape[1]
        s = torch.cat([s, torch.full((s.shape[0], pad), _NEG_INF)], 1)
        idx = torch.cat([idx, torch.full((idx.shape[0], pad), -1, dtype=torch.int64)], 1)
    return s, idx


def _positive_mask(pos: Positives, q0: int, q1: int, c0: int, c1: int) -> torch.Tensor:
    lo, hi = int(pos.indptr[q0]), int(pos.indptr[q1])
    cols = pos.indices[lo:hi]
    rows = torch.repeat_interleave(torch.arange(q1 - q0), pos.indptr[q0 + 1:q1 + 1] - pos.indptr[q0:q1])
    sel = (cols >= c0) & (cols < c1)
    m = torch.zeros(q1 - q0, c1 - c0, dtype=torch.bool)
    m[rows[sel], cols[sel] - c0] = True
    return m


def expected_first_positive_rank(query: torch.Tensor, corpus: torch.Tensor, positives: Any,
                                 exclude: torch.Tensor | None = None, query_chunk: int = 1024,
                                 corpus_chunk: int = 16384) -> torch.Tensor:
    """float64 [Q]: tie-aware expected rank (1-based) of each query's first positive (module
    docstring); ``inf`` for queries without positives. Two exact chunked passes over the corpus."""
    q, c = _prep(query, "query"), _prep(corpus, "corpus")
    pos = as_positives(positives, q.shape[0])
    Q, N = q.shape[0], c.shape[0]
    invalid = c.norm(dim=1) == 0
    if exclude is not None:
        exclude = torch.as_tensor(exclude, dtype=torch.int64).cpu()
    ranks = torch.full((Q,), float("inf"), dtype=torch.float64)
    for q0 in range(0, Q, query_chunk):
        q1 = min(q0 + query_chunk, Q)
        qq = q[q0:q1]
        ex = None if exclude is None else exclude[q0:q1]
        best = torch.full((q1 - q0,), _NEG_INF)
        for c0 in range(0, N, corpus_chunk):
            c1 = min(c0 + corpus_chunk, N)
            s = _chunk_scores(qq, c[c0:c1], c0, ex, invalid)
            m = _positive_mask(pos, q0, q1, c0, c1)
            best = torch.maximum(best, torch.where(m, s, torch.full_like(s, _NEG_INF)).amax(1))
        gt = torch.zeros(q1 - q0, dtype=torch.float64)
        tneg = torch.zeros(q1 - q0, dtype=torch.float64)
        tpos = torch.zeros(q1 - q0, dtype=torch.float64)
        for c0 in range(0, N, corpus_chunk):
            c1 = min(c0 + corpus_chunk, N)
            s = _chunk_scores(qq, c[c0:c1], c0, ex, invalid)
            m = _positive_mask(pos, q0, q1, c0, c1)
            cand = torch.ones_like(m)
            cand[:, invalid[c0:c1]] = False
            if ex is not None:
                sel = (ex >= c0) & (ex < c1)
                r = torch.nonzero(sel).squeeze(1)
                cand[r, ex[r] - c0] = False
            neg = cand & ~m
            b = best[:, None]
            gt += ((s > b) & neg).sum(1).double()
            tneg += ((s == b) & neg).sum(1).double()
            tpos += ((s == b) & m & cand).sum(1).double()
        r = gt + 1 + tneg / (tpos + 1)
        has = pos.counts()[q0:q1] > 0
        ranks[q0:q1] = torch.where(has, r, torch.full_like(r, float("inf")))
    return ranks


def retrieval_metrics(query: torch.Tensor, corpus: torch.Tensor, positives: Any,
                      ks: Sequence[int] = (1, 5, 10), exclude: torch.Tensor | None = None,
                      mrr: bool = True, ndcg: bool = True, query_chunk: int = 1024,
                      corpus_chunk: int = 16384, backend: str = "auto", prefix: str = "",
                      per_query: dict[str, np.ndarray] | None = None) -> dict[str, float]:
    """Retrieval metrics of the module docstring, averaged over queries with >= 1 positive.

    Args:
      query: float [Q, D]; corpus: float [N, D]; positives: per-query positive corpus rows.
      ks: cut-offs of ``recall@k``, ``recall_frac@k`` and ``ndcg@k``.
      exclude: int64 [Q] corpus row removed from each query's candidates (-1: none).
      mrr: compute the tie-aware MRR (an extra two exact passes over the corpus).
      per_query: a dict to fill with the values behind the means: ``{prefix}rows`` int64 [Q']
        (the query rows with >= 1 positive) and, aligned with them, float64 [Q'] arrays
        ``{prefix}recall@k`` (hit 0/1) and ``{prefix}mrr`` (1 / tie-aware rank).

    Returns {prefix + name: float} with ``recall@k``, ``recall_frac@k``, ``ndcg@k`` per k,
    ``mrr`` (when asked), ``num_queries`` (queries with a positive; NaN metrics when 0).
    """
    q = _prep(query, "query")
    pos = as_positives(positives, q.shape[0])
    counts = pos.counts()
    has = counts > 0
    nq = int(has.sum())
    ks = sorted({int(k) for k in ks})
    out: dict[str, float] = {f"{prefix}num_queries": nq}
    if nq == 0:
        for k in ks:
            out[f"{prefix}recall@{k}"] = out[f"{prefix}recall_frac@{k}"] = float("nan")
            if ndcg:
                out[f"{prefix}ndcg@{k}"] = float("nan")
        if mrr:
            out[f"{prefix}mrr"] = float("nan")
        return out
    _, top = exact_topk(q, corpus, max(ks), exclude, query_chunk, corpus_chunk, backend)
    kmax = top.shape[1]
    hit = torch.zeros_like(top, dtype=torch.bool)
    for q0 in range(0, q.shape[0], query_chunk):       # membership of top-k entries in positives
        q1 = min(q0 + query_chunk, q.shape[0])
        rows = torch.repeat_interleave(torch.arange(q1 - q0), counts[q0:q1])
        cols = pos.indices[int(pos.indptr[q0]):int(pos.indptr[q1])]
        key_pos = rows * (corpus.shape[0] + 1) + cols
        t = top[q0:q1]
        key_top = torch.arange(q1 - q0)[:, None] * (corpus.shape[0] + 1) + t
        hit[q0:q1] = torch.isin(key_top, key_pos) & (t >= 0)
    hc = hit[has].double()
    n = counts[has].double()
    if per_query is not None:
        per_query[f"{prefix}rows"] = torch.nonzero(has).squeeze(1).numpy().astype(np.int64)
    disc = 1.0 / torch.log2(torch.arange(kmax, dtype=torch.float64) + 2.0)
    for k in ks:
        kk = min(k, kmax)
        h = hc[:, :kk]
        hits = (h.sum(1) > 0).double()
        out[f"{prefix}recall@{k}"] = float(hits.mean())
        if per_query is not None:
            per_query[f"{prefix}recall@{k}"] = hits.numpy()
        out[f"{prefix}recall_frac@{k}"] = float((h.sum(1) / n).mean())
        if ndcg:
            dcg = (h * disc[:kk]).sum(1)
            ideal_n = torch.clamp(n, max=kk).long()
            cum = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(disc[:kk], 0)])
            out[f"{prefix}ndcg@{k}"] = float((dcg / cum[ideal_n]).mean())
    if mrr:
        r = expected_first_positive_rank(q, corpus, pos, exclude, query_chunk, corpus_chunk)
        rr = 1.0 / r[has]
        out[f"{prefix}mrr"] = float(rr.mean())
        if per_query is not None:
            per_query[f"{prefix}mrr"] = rr.numpy()
    return out


def image_text_retrieval(image: torch.Tensor, text: torch.Tensor, text_to_image: Any = None,
                         ks: Sequence[int] = (1, 5, 10), backend: str = "auto",
                         **chunks) -> dict[str, float]:
    """Text -> image and image -> text recall@k (hit rate over several positives).

    image: float [Ni, D]; text: float [Nt, D]; text_to_image: positives of each text (image rows);
    None means text i pairs with image i (Ni == Nt). Image -> text positives are the transpose.
    Returns ``t2i_recall@k``, ``i2t_recall@k`` (plus ``*_recall_frac@k``, ``*_num_queries``).
    """
    if text_to_image is None:
        if image.shape[0] != text.shape[0]:
            raise ValueError(f"image rows {image.shape[0]} != text rows {text.shape[0]}: pass text_to_image")
        n = image.shape[0]
        text_to_image = Positives(torch.arange(n + 1), torch.arange(n))
    t2i = as_positives(text_to_image, text.shape[0])
    out = {}
    for name, q, c, p in (("t2i_", text, image, t2i), ("i2t_", image, text, t2i.transpose(image.shape[0]))):
        m = retrieval_metrics(q, c, p, ks, mrr=False, ndcg=False, backend=backend, prefix=name, **chunks)
        out.update(m)
    return out


def board_mate_positives(query_pins: Any, query_boards: Any, member_pins: Any = None,
                         member_boards: Any = None, num_pins: int | None = None) -> tuple[torch.Tensor, Positives]:
    """Board-mate positives for pin -> pin retrieval.

    For each query edge (pin p, board b) (e.g. the test or cold-start edges), every pin that is
    a member of b (``member_pins`` / ``member_boards``: an edge list, by default the query edges
    themselves; e.g. all edges of the graph) other than p is a positive of p. Edges of one pin
    are merged.

    Returns (pins int64 [Q] sorted unique query pins, Positives over those Q queries).
    """
    qp = torch.as_tensor(np.asarray(query_pins), dtype=torch.int64)
    qb = torch.as_tensor(np.asarray(query_boards), dtype=torch.int64)
    mp = qp if member_pins is None else torch.as_tensor(np.asarray(member_pins), dtype=torch.int64)
    mb = qb if member_boards is None else torch.as_tensor(np.asarray(member_boards), dtype=torch.int64)
    def _max(t: torch.Tensor) -> int:
        return int(t.max()) if t.numel() else -1
    P = int(num_pins) if num_pins is not None else max(_max(qp), _max(mp)) + 1
    import scipy.sparse as sp
    nb = max(_max(qb), _max(mb)) + 1
    A = sp.csr_matrix((np.ones(qp.numel()), (qp.numpy(), qb.numpy())), shape=(P, nb))
    M = sp.csr_matrix((np.ones(mp.numel()), (mb.numpy(), mp.numpy())), shape=(nb, P))
    A.data[:] = 1
    M.data[:] = 1
    R = (A @ M).tocsr()
    R.setdiag(0)
    R.eliminate_zeros()
    pins = torch.unique(qp)
    sub = R[pins.numpy()].tocsr()
    sub.sort_indices()
    return pins, Positives(torch.from_numpy(sub.indptr.astype(np.int64)),
                           torch.from_numpy(sub.indices.astype(np.int64)))


def pin_retrieval(emb: torch.Tensor, query_pins: Any, positives: Any, ks: Sequence[int] = (1, 5, 10),
                  backend: str = "auto", prefix: str = "board_", **chunks) -> dict[str, float]:
    """Pin -> pin board-mate retrieval among all pins, the query pin excluded.

    emb: float [P, D] embeddings of every pin (image, text or fused: fused -> fused retrieval is
    this same function on fused embeddings); query_pins: int64 [Q]; positives: per query pin
    (e.g. from ``board_mate_positives``). Returns ``{prefix}recall@k``, ``recall_frac@k``,
    ``ndcg@k``, ``mrr``, ``num_queries``.
    """
    qp = torch.as_tensor(np.asarray(query_pins), dtype=torch.int64)
    e = _prep(emb, "emb")
    return retrieval_metrics(e[qp], e, positives, ks, exclude=qp, backend=backend, prefix=prefix, **chunks)
