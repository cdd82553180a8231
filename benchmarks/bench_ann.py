"""ANN serving benchmark: faiss flat and IVF-PQ indexes (``training.ann``) over 1M embeddings.

    python benchmarks/bench_ann.py --json --out /tmp/ann.json   # 1M x 256, flat + IVF-PQ m=32: ~12 min on 2 busy cores
    python benchmarks/bench_ann.py --intrinsic-dim 32 --m 32 64 --no-flat   # data closer to real embeddings
    python benchmarks/bench_ann.py --n 100000 --dim 128 --m 16 32 --nprobe 1 8 32

Data: synthetic *clustered* unit vectors from ``numpy.random.default_rng(--seed)``: ``--clusters``
centers drawn uniformly on the sphere, cluster popularity Zipf-like (weight of the r-th center
proportional to 1 / (r + 10)), each vector = its center + Gaussian noise of norm ~``--noise`` times
the center's, L2-normalized (cosine to its center about 0.7 at the default 1.0), the shape of a
model's L2-normalized embeddings. D = 256 by default: the embedding width of the default model
config ``pinclip-vit-b16-minilm`` (``pinclip-tiny-demo`` is 128-d). Queries: ``--queries`` more
vectors from the same distribution (not in the index).

Reported (JSON): per index, build time (training and adding separately), index bytes (the
serialized index, what ``index.faiss`` takes) and bytes per vector; per nprobe, recall@10 against
exact search (``training.evaluation.retrieval.exact_topk``), the recall@10 after exact re-ranking
of the top ``--rerank`` candidates with the float32 vectors (``training.ann.rerank``), single-query
latency (one thread, one query per call: median and p99 over ``--latency-queries``) and batch
throughput (all queries in one call, all faiss threads). The exact flat index is measured the same
way. The machine is usually shared: see ``loadavg`` in the report.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import emit_report  # noqa: E402
from training.ann import build_index, exact_reference, index_nbytes, recall_at_k, require_faiss, rerank  # noqa: E402


def clustered_vectors(n: int, dim: int, clusters: int, noise: float, seed: int, intrinsic_dim: int | None = None,
                      chunk: int = 100_000) -> tuple[np.ndarray, tuple]:
    """(vectors float32 [n, dim] L2-normalized, generator state for :func:`more_vectors`) from one
    seeded generator; see the module docstring. ``intrinsic_dim`` r: the noise lives in one random
    r-dimensional subspace (a lower intrinsic dimension, as real embeddings have); None: isotropic.
    Deterministic for its arguments."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim), dtype=np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    w = 1.0 / (np.arange(clusters) + 10.0)
    w /= w.sum()
    basis = None
    if intrinsic_dim:
        basis = np.linalg.qr(rng.standard_normal((dim, intrinsic_dim)))[0].T.astype(np.float32)  # [r, dim]
    state = (rng, centers, w, np.float32(noise), basis)
    out = np.empty((n, dim), dtype=np.float32)
    for r0 in range(0, n, chunk):
        out[r0:min(n, r0 + chunk)] = more_vectors(state, min(n, r0 + chunk) - r0)
    return out, state


def more_vectors(state: tuple, n: int) -> np.ndarray:
    """``n`` more vectors from the distribution (and generator) of :func:`clustered_vectors`."""
    rng, centers, w, noise, basis = state
    a = rng.choice(centers.shape[0], size=n, p=w)
    if basis is None:
        eps = np.float32(noise / np.sqrt(centers.shape[1])) * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    else:
        eps = (np.float32(noise / np.sqrt(basis.shape[0]))
               * rng.standard_normal((n, basis.shape[0]), dtype=np.float32)) @ basis
    block = centers[a] + eps
    block /= np.linalg.norm(block, axis=1, keepdims=True)
    return block.astype(np.float32, copy=False)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def measure(ann, queries: np.ndarray, exact_ids: np.ndarray, vectors: np.ndarray, k: int, nprobe: int | None,
            rerank_k: int, latency_queries: int, faiss, threads: int) -> dict:
    """recall@k, recall after re-ranking, single-query latency and batch throughput at one nprobe."""
    faiss.omp_set_num_threads(threads)
    t = time.perf_counter()
    _, ids = ann.search(queries, k, nprobe)
    batch_s = time.perf_counter() - t
    res = {"nprobe": nprobe, f"recall@{k}": recall_at_k(ids, exact_ids),
           "batch_qps": queries.shape[0] / batch_s, "batch_s": batch_s}
    if rerank_k:
        _, cand = ann.search(queries, rerank_k, nprobe)
        _, rr = rerank(queries, cand, vectors, k)
        res[f"recall@{k}_rerank{rerank_k}"] = recall_at_k(rr, exact_ids)
    faiss.omp_set_num_threads(1)
    lat = []
    for i in range(min(latency_queries, queries.shape[0])):
        t = time.perf_counter()
        ann.search(queries[i:i + 1], k, nprobe)
        lat.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(threads)
    lat.sort()
    res.update(latency_ms_p50=1e3 * statistics.median(lat), latency_ms_p99=1e3 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
               single_thread_qps=len(lat) / sum(lat))
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--noise", type=float, default=1.0)
    ap.add_argument("--intrinsic-dim", type=int, default=None,
                    help="noise in a random subspace of this dimension (default: isotropic, the hardest case)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--latency-queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--rerank", type=int, default=100, help="candidates re-ranked exactly (0: skip)")
    ap.add_argument("--m", type=int, nargs="+", default=[None], help="PQ sub-quantizers per index (default D/8)")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--no-flat", action="store_true", help="skip the exact flat index")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (default: a table)")
    ap.add_argument("--out", type=Path, help="also write the JSON report here")
    args = ap.parse_args(argv)
    faiss = require_faiss()
    threads = faiss.omp_get_max_threads()

    report: dict = {"benchmark": "ann", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    "data": {"n": args.n, "dim": args.dim, "clusters": args.clusters, "noise": args.noise,
                             "intrinsic_dim": args.intrinsic_dim, "seed": args.seed, "queries": args.queries, "generator": "numpy default_rng, clustered, "
                             "Zipf-like cluster sizes, L2-normalized"},
                    "k": args.k, "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                                             "faiss_threads": threads, "loadavg_start": _loadavg()},
                    "versions": {"faiss": faiss.__version__, "numpy": np.__version__,
                                 "python": platform.python_version()},
                    "indexes": []}
    t = time.perf_counter()
    x, state = clustered_vectors(args.n, args.dim, args.clusters, args.noise, args.seed, args.intrinsic_dim)
    q = more_vectors(state, args.queries)
    report["data"]["generate_s"] = time.perf_counter() - t
    print(f"data: {args.n:,} x {args.dim} in {report['data']['generate_s']:.1f} s", file=sys.stderr)
    t = time.perf_counter()
    _, exact_ids = exact_reference(q, x, args.k)
    report["exact_reference_s"] = time.perf_counter() - t
    print(f"exact top-{args.k}: {report['exact_reference_s']:.1f} s", file=sys.stderr)

    configs = [] if args.no_flat else [("flat", None)]
    configs += [("ivfpq", m) for m in args.m]
    for kind, m in configs:
        params = {} if kind == "flat" else {k: v for k, v in (("m", m), ("nlist", args.nlist)) if v is not None}
        ann = build_index(x, kind, seed=args.seed, **params)
        nbytes = index_nbytes(ann.index)
        entry = {"kind": kind, "params": ann.manifest["params"], "train_s": ann.manifest["train_s"],
                 "build_s": ann.manifest["build_s"], "add_s": ann.manifest["build_s"] - ann.manifest["train_s"],
                 "index_bytes": nbytes, "bytes_per_vector": nbytes / args.n,
                 "float32_bytes_per_vector": 4 * args.dim, "loadavg": _loadavg(), "search": []}
        print(f"{kind} {ann.manifest['params']}: built in {entry['build_s']:.1f} s, {nbytes / 1e6:.1f} MB",
              file=sys.stderr)
        probes = [None] if kind == "flat" else [p for p in args.nprobe if p <= ann.index.nlist]
        for p in probes:
            r = measure(ann, q, exact_ids, x, args.k, p, args.rerank if kind == "ivfpq" else 0,
                        args.latency_queries, faiss, threads)
            entry["search"].append(r)
            print(f"  nprobe={p}: " + ", ".join(f"{k} {v:.4g}" for k, v in r.items() if k != "nprobe"),
                  file=sys.stderr)
        report["indexes"].append(entry)
        del ann
    report["machine"]["loadavg_end"] = _loadavg()
    if not emit_report(report, args.out, args.json):
        _print_table(report)
    return 0


def _print_table(report: dict) -> None:
    k = report["k"]
    print(f"{'index':8s} {'nprobe':>6s} {'recall@' + str(k):>10s} {'p50_ms':>8s} {'p99_ms':>8s} {'bytes/vec':>10s}")
    for e in report["indexes"]:
        for r in e["search"]:
            print(f"{e['kind']:8s} {str(r['nprobe']):>6s} {r[f'recall@{k}']:10.4f} {r['latency_ms_p50']:8.3f} "
                  f"{r['latency_ms_p99']:8.3f} {e['bytes_per_vector']:10.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
