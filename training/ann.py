"""Approximate nearest-neighbor serving of exported embeddings with faiss.

``pinclip embed`` writes ``image.npy`` / ``text.npy`` / ``fused.npy`` ([P, D], L2-normalized,
row i = internal pin i); this module indexes one of them for inner-product (cosine) search:

* ``flat``: ``faiss.IndexFlatIP``, exact; 4 D bytes per vector.
* ``ivfpq``: ``faiss.IndexIVFPQ`` (inner product): a coarse quantizer of ``nlist`` centroids
  (k-means) routes each vector to one inverted list, where it is stored as ``m`` product-quantizer
  codes of ``nbits`` bits; a query scans the ``nprobe`` nearest lists. About ``m * nbits / 8``
  bytes of code + 8 bytes of id per vector. Trained on a seeded uniform sample of the vectors.

On disk (written atomically with ``graph.atomic.atomic_directory``)::

    INDEX_DIR/index.faiss     faiss.write_index of the index; faiss row id = internal pin id
    INDEX_DIR/manifest.json   format, kind, which, metric, num_vectors, dim, params (nlist, m,
                              nbits, nprobe, train_size, seed), bytes, build time, the embedding
                              directory it was built from and that directory's model / step

    from training.ann import build_index_from_embeddings, load_index
    build_index_from_embeddings("emb", "ann", kind="ivfpq", which="fused")
    ann = load_index("ann")
    scores, ids = ann.search(queries, k=10)                 # float32 [Q, k], int64 [Q, k] (-1 padded)
    ann.recall(queries, corpus, k=10)                       # recall@k against exact search
    scores, ids = rerank(queries, ann.search(queries, 100)[1], corpus, k=10)   # exact re-rank of 100

IVF-PQ's recall is bounded by the product quantizer's error, not by ``nprobe``: measured on 1M
clustered 256-d vectors (``benchmarks/RESULTS.md``, "ANN serving"), m = 32 reaches recall@10
0.26-0.59 and, re-ranked from its top 100 with the exact vectors, 0.76-0.97.

faiss is an optional dependency (``pip install 'pinclip-toolkit[faiss]'``, i.e. faiss-cpu);
:func:`require_faiss` (from ``training.faiss_probe``, re-exported here) raises
:class:`FaissMissingError` with that advice when it does not import.
Exact search (the reference for recall) is ``training.evaluation.retrieval.exact_topk``.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph.atomic import atomic_directory
from graph.errors import MissingInputError, ToolkitError
from graph.output_dir import OutputKind
from graph.storage import read_json_object
from training.embed import load_embeddings
from training.evaluation.retrieval import exact_topk
from training.faiss_probe import FaissMissingError, require_faiss  # the one faiss probe; re-exported here

__all__ = ["KINDS", "WHICH", "FORMAT", "VERSION", "FaissMissingError", "ANNIndexError", "require_faiss",
           "default_ivfpq_params", "build_index", "build_index_from_embeddings", "save_index", "load_index",
           "ANNIndex", "recall_at_k", "rerank", "exact_reference", "index_nbytes"]

KINDS = ("flat", "ivfpq")
WHICH = ("fused", "image", "text")
FORMAT = "pinclip-ann-index"
# The index directory as an output (graph.output_dir): ann-index replaces only its own indexes.
ANN_OUTPUT = OutputKind("an ANN index", "pinclip ann-index", "manifest.json", "format", FORMAT)
VERSION = 1
ADD_CHUNK = 65536      # rows converted to float32 and added at a time (bounded memory for mmaps)


class ANNIndexError(ToolkitError, ValueError):
    """A bad parameter, input array or index directory; the message names it."""


def _largest_divisor_at_most(d: int, bound: int) -> int:
    for m in range(max(1, min(d, bound)), 0, -1):
        if d % m == 0:
            return m
    return 1


def default_ivfpq_params(n: int, d: int) -> dict[str, int]:
    """Defaults for ``n`` vectors of dimension ``d``:

    * ``nlist`` = 4 sqrt(n) rounded to a power of two (1M -> 4096), at most n / 39 (faiss wants
      >= 39 training points per centroid) and at least 1;
    * ``m`` = the largest divisor of d that is <= d / 8 (256 -> 32 codes, 128 -> 16): 8 dims per
      sub-quantizer, ``m`` bytes of code per vector at ``nbits`` = 8 (32x smaller than float32);
    * ``nbits`` = 8, or fewer when n is too small to train 2^nbits centroids per sub-quantizer;
    * ``nprobe`` = nlist / 64 (at least 1): 1.6% of the lists scanned per query;
    * ``train_size`` = min(n, max(40 nlist, 40 * 2^nbits)) sampled vectors (just above faiss's
      minimum of 39 per centroid: k-means over 1M x 256 with 4096 lists is minutes on 2 cores).
    """
    if n < 1 or d < 1:
        raise ANNIndexError(f"cannot index {n} vectors of dimension {d}")
    nlist = 2 ** int(round(math.log2(max(1.0, 4.0 * math.sqrt(n)))))
    nlist = int(max(1, min(nlist, n // 39)))
    m = _largest_divisor_at_most(d, max(1, d // 8))
    nbits = 8
    while nbits > 4 and n < 39 * 2 ** nbits:
        nbits -= 1
    return {"nlist": nlist, "m": m, "nbits": nbits, "nprobe": max(1, nlist // 64),
            "train_size": int(min(n, max(40 * nlist, 40 * 2 ** nbits)))}


def _as_matrix(vectors: Any, name: str) -> np.ndarray:
    """A 2-D numpy view (no copy for numpy arrays and memmaps); float rows checked later per chunk."""
    if hasattr(vectors, "detach"):
        vectors = vectors.detach().cpu().numpy()
    arr = np.asarray(vectors) if not isinstance(vectors, np.ndarray) else vectors
    if arr.ndim != 2:
        raise ANNIndexError(f"{name}: expected a 2-D [rows, dim] array, got shape {list(arr.shape)}")
    if arr.dtype.kind != "f":
        raise ANNIndexError(f"{name}: expected floating-point vectors, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ANNIndexError(f"{name}: empty array of shape {list(arr.shape)}")
    return arr


def _f32(block: np.ndarray, name: str, row0: int) -> np.ndarray:
    out = np.ascontiguousarray(block, dtype=np.float32)
    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        raise ANNIndexError(f"{name}: row {row0 + int(np.flatnonzero(bad)[0])} holds a non-finite value")
    return out


def index_nbytes(index: Any) -> int:
    """Bytes of the serialized index (what ``index.faiss`` takes on disk and, to within a few
    kB, in memory)."""
    faiss = require_faiss()
    return int(faiss.serialize_index(index).nbytes)


@dataclass
class ANNIndex:
    """A faiss index over embedding rows (faiss id = row = internal pin id) and its manifest."""
    index: Any
    manifest: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @property
    def dim(self) -> int:
        return int(self.index.d)

    def search(self, queries: Any, k: int, nprobe: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by inner product. queries: float [Q, D] (numpy or torch). nprobe: lists
        scanned (ivfpq; default the manifest's). Returns (scores float32 [Q, k], ids int64 [Q, k]),
        best first; ids are -1 (score -inf) where fewer than k rows were reached."""
        q = _f32(_as_matrix(queries, "queries"), "queries", 0)
        if q.shape[1] != self.dim:
            raise ANNIndexError(f"queries: dim {q.shape[1]} != index dim {self.dim}")
        if int(k) < 1:
            raise ANNIndexError(f"k={k}: must be >= 1")
        if self.kind == "ivfpq":
            p = int(self.manifest["params"]["nprobe"] if nprobe is None else nprobe)
            if p < 1:
                raise ANNIndexError(f"nprobe={nprobe}: must be >= 1")
            self.index.nprobe = min(p, int(self.index.nlist))
        elif nprobe is not None:
            raise ANNIndexError(f"nprobe={nprobe}: only an ivfpq index takes nprobe (this one is {self.kind})")
        scores, ids = self.index.search(q, int(k))
        scores = scores.astype(np.float32, copy=False)
        scores[ids < 0] = -np.inf
        return scores, ids.astype(np.int64, copy=False)

    def recall(self, queries: Any, corpus: Any, k: int = 10, nprobe: int | None = None,
               exact: tuple[Any, Any] | None = None) -> float:
        """recall@k of this index against exact search over ``corpus`` (the vectors it holds, [N, D]):
        the mean over queries of |approximate top-k ∩ exact top-k| / k. ``exact``: precomputed
        (scores, ids) of ``training.evaluation.retrieval.exact_topk`` to reuse across calls."""
        if exact is None:
            exact = exact_reference(queries, corpus, k)
        _, ids = self.search(queries, k, nprobe)
        return recall_at_k(ids, exact[1])


def exact_reference(queries: Any, corpus: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (scores float32 [Q, k], ids int64 [Q, k]) with
    ``training.evaluation.retrieval.exact_topk`` (chunked torch, or faiss flat from 1M rows)."""
    q = torch.from_numpy(_f32(_as_matrix(queries, "queries"), "queries", 0))
    c = _as_matrix(corpus, "corpus")
    c = torch.from_numpy(np.ascontiguousarray(c, dtype=np.float32))
    s, i = exact_topk(q, c, k)
    return s.numpy(), i.numpy()


def rerank(queries: Any, candidate_ids: Any, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Re-score candidates exactly: queries float [Q, D], candidate_ids int64 [Q, K'] (from an
    approximate search with K' >= k, -1 padded), vectors [N, D] (e.g. the memory-mapped embedding
    matrix: only the candidates' rows are read). Returns (scores float32 [Q, k], ids int64 [Q, k])."""
    q = _f32(_as_matrix(queries, "queries"), "queries", 0)
    cand = np.asarray(candidate_ids, dtype=np.int64)
    if cand.ndim != 2 or cand.shape[0] != q.shape[0]:
        raise ANNIndexError(f"candidate_ids: shape {list(cand.shape)}, expected [{q.shape[0]}, K']")
    if k > cand.shape[1]:
        raise ANNIndexError(f"k={k}: more than the {cand.shape[1]} candidates per query")
    x = _as_matrix(vectors, "vectors")
    flat = cand.reshape(-1)
    ok = flat >= 0
    rows = np.zeros((flat.size, x.shape[1]), dtype=np.float32)
    uniq, inv = np.unique(flat[ok], return_inverse=True)
    rows[ok] = np.asarray(x[uniq], dtype=np.float32)[inv]
    s = np.einsum("qkd,qd->qk", rows.reshape(cand.shape + (x.shape[1],)), q)
    s[cand < 0] = -np.inf
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1).astype(np.float32), np.take_along_axis(cand, order, 1)


def recall_at_k(approx_ids: Any, exact_ids: Any) -> float:
    """Mean over queries of |approx_ids[q] ∩ exact_ids[q]| / k (int [Q, k] each; -1 never counts)."""
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.shape != e.shape or a.ndim != 2:
        raise ANNIndexError(f"recall_at_k: id arrays of shapes {list(a.shape)} and {list(e.shape)}: expected equal [Q, k]")
    if a.shape[0] == 0:
        raise ANNIndexError("recall_at_k: no queries")
    hits = 0
    for row_a, row_e in zip(a, e):
        hits += len(set(row_a[row_a >= 0].tolist()) & set(row_e[row_e >= 0].tolist()))
    return hits / (a.shape[0] * a.shape[1])


def build_index(vectors: Any, kind: str = "ivfpq", *, nlist: int | None = None, m: int | None = None,
                nbits: int | None = None, nprobe: int | None = None, train_size: int | None = None,
                seed: int = 0, name: str = "vectors", progress=None) -> ANNIndex:
    """Build an index over ``vectors`` (float16/float32 [N, D], numpy, memmap or torch; row i gets
    faiss id i). Parameters left None take :func:`default_ivfpq_params`. Rows are converted to
    float32 ``ADD_CHUNK`` at a time, so a memory-mapped input is never copied whole. Deterministic
    for a given ``seed`` (training sample and k-means seeds)."""
    faiss = require_faiss()
    if kind not in KINDS:
        raise ANNIndexError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    x = _as_matrix(vectors, name)
    n, d = x.shape
    t0 = time.perf_counter()
    params: dict[str, Any] = {"seed": int(seed)}
    if kind == "flat":
        for key, v in (("nlist", nlist), ("m", m), ("nbits", nbits), ("nprobe", nprobe), ("train_size", train_size)):
            if v is not None:
                raise ANNIndexError(f"{key}={v}: only an ivfpq index takes {key}")
        index = faiss.IndexFlatIP(d)
        train_s = 0.0
    else:
        p = default_ivfpq_params(n, d)
        for key, v in (("nlist", nlist), ("m", m), ("nbits", nbits), ("nprobe", nprobe), ("train_size", train_size)):
            if v is not None:
                if int(v) < 1:
                    raise ANNIndexError(f"{key}={v}: must be >= 1")
                p[key] = int(v)
        if d % p["m"]:
            raise ANNIndexError(f"m={p['m']}: must divide the dimension {d} (e.g. {_largest_divisor_at_most(d, d // 8)})")
        if not 1 <= p["nbits"] <= 16:
            raise ANNIndexError(f"nbits={p['nbits']}: expected 1..16")
        if p["nlist"] > n:
            raise ANNIndexError(f"nlist={p['nlist']}: more lists than the {n} vectors")
        p["train_size"] = min(p["train_size"], n)
        if p["train_size"] < max(p["nlist"], 2 ** p["nbits"]):
            raise ANNIndexError(f"train_size={p['train_size']}: needs at least nlist={p['nlist']} and "
                                f"2**nbits={2 ** p['nbits']} training vectors")
        params.update(p)
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFPQ(quantizer, d, p["nlist"], p["m"], p["nbits"], faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.pq.cp.seed = int(seed) + 1
        index.cp.verbose = False
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=p["train_size"], replace=False))
        train = _f32(x[sample], name, 0)
        t1 = time.perf_counter()
        index.train(train)
        train_s = time.perf_counter() - t1
        del train
        index.nprobe = min(p["nprobe"], p["nlist"])
    for r0 in range(0, n, ADD_CHUNK):
        index.add(_f32(x[r0:r0 + ADD_CHUNK], name, r0))
        if progress:
            progress(min(n, r0 + ADD_CHUNK), n)
    build_s = time.perf_counter() - t0
    manifest = {"format": FORMAT, "version": VERSION, "kind": kind, "metric": "inner_product",
                "num_vectors": int(n), "dim": int(d), "params": params, "train_s": round(train_s, 3),
                "build_s": round(build_s, 3), "faiss_version": getattr(faiss, "__version__", "unknown")}
    return ANNIndex(index, manifest)


def save_index(ann: ANNIndex, out: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write ``out/index.faiss`` and ``out/manifest.json`` atomically (the directory is replaced
    whole, or left as it was on failure). Returns ``out``."""
    faiss = require_faiss()

    out = Path(out)
    manifest = dict(ann.manifest, **(extra or {}))
    with atomic_directory(out, ANN_OUTPUT) as tmp:
        faiss.write_index(ann.index, str(tmp / "index.faiss"))
        manifest["index_bytes"] = (tmp / "index.faiss").stat().st_size
        manifest["bytes_per_vector"] = manifest["index_bytes"] / max(1, manifest["num_vectors"])
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    ann.manifest = manifest
    return out


def load_index(path: str | os.PathLike) -> ANNIndex:
    """Open an index directory written by :func:`save_index`; checks the manifest against the index."""
    faiss = require_faiss()
    path = Path(path)
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise MissingInputError(f"{path}: not an ANN index directory (no manifest.json)")
    manifest = read_json_object(mpath, ANNIndexError)
    if manifest.get("format") != FORMAT:
        raise ANNIndexError(f"{mpath}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("version") != VERSION:
        raise ANNIndexError(f"{mpath}: version {manifest.get('version')!r}, this code reads {VERSION}")
    ipath = path / "index.faiss"
    if not ipath.is_file():
        raise MissingInputError(f"{ipath}: missing")
    try:
        index = faiss.read_index(str(ipath))
    except RuntimeError as exc:
        raise ANNIndexError(f"{ipath}: faiss cannot read it (corrupt or truncated): {str(exc).splitlines()[0]}") from None
    if int(index.ntotal) != manifest["num_vectors"] or int(index.d) != manifest["dim"]:
        raise ANNIndexError(f"{ipath}: holds {index.ntotal} vectors of dim {index.d}, manifest.json says "
                            f"{manifest['num_vectors']} of dim {manifest['dim']}")
    ann = ANNIndex(index, manifest)
    if ann.kind == "ivfpq":
        index.nprobe = min(int(manifest["params"]["nprobe"]), int(index.nlist))
    return ann


def build_index_from_embeddings(emb_dir: str | os.PathLike, out: str | os.PathLike, kind: str = "ivfpq",
                                which: str = "fused", **params) -> ANNIndex:
    """Index one embedding matrix of a ``pinclip embed`` directory (``training.embed.load_embeddings``)
    and save it to ``out`` (see the module docstring). ``params``: :func:`build_index` keywords."""
    if which not in WHICH:
        raise ANNIndexError(f"which={which!r}: expected one of {', '.join(WHICH)}")
    emb_dir = Path(emb_dir)
    if not (emb_dir / "manifest.json").is_file():
        raise MissingInputError(f"{emb_dir}: not an embedding directory (no manifest.json; write one with pinclip embed)")
    emb = load_embeddings(emb_dir)
    if which not in emb:
        raise ANNIndexError(f"{emb_dir}: no {which!r} embeddings in manifest.json")
    ann = build_index(emb[which], kind, name=str(emb_dir / emb["manifest"]["arrays"][which]), **params)
    m = emb["manifest"]
    save_index(ann, out, {"which": which, "embeddings": str(emb_dir.absolute()),
                          "source": {k: m.get(k) for k in ("model", "step", "num_pins", "dim", "dtype")}})
    return ann
