"""Graph store open benchmark: ``PinBoardGraph.open`` with verify "none", "fast" and "full".

    python benchmarks/bench_store_open.py --json                          # 1M pins, 100k boards, 10M edges
    python benchmarks/bench_store_open.py --pins 10000000 --boards 1000000 --edges 100000000
    python benchmarks/bench_store_open.py --store GRAPH_DIR --repeats 5   # an existing store
    python benchmarks/bench_store_open.py --cold                          # page cache evicted first
    python benchmarks/bench_store_open.py --json --data-dir /scratch/bench   # synthetic store outside the checkout

What it measures (one process, ``--repeats`` timed calls of each, medians reported with every
sample): ``open_none_s`` (manifest, sizes, ``.npy`` headers, memory maps: constant time),
``open_fast_s`` (the default: that plus CRC32 of 16 sampled 64 KiB blocks per file plus the
CSR structure check, ``graph.store.check_structure``: each indptr runs from 0 to E without
decreasing, every index is in range; O(E)), ``open_full_s`` (CRC32 of every byte, then the
structure check), and ``structure_check_s``, the structure check alone on a store opened with
verify "none". Each open maps the files afresh, so page faults are included; with the page
cache warm (the default: one untimed open of each kind first) no byte comes from the disk.
``--cold`` evicts the store's files from the page cache (``posix_fadvise(DONTNEED)`` on those
files only) before every timed call, so the O(E) checks read from the disk.

The store (unless ``--store``) is synthetic, cached under ``--data-dir`` (default ``benchmarks/_data/``): the shapes and
dtypes of a weighted store of that size (int64 indptr, int32 indices, float32 weights in both
directions), whose two directions are *independent* random CSRs (uniform pin degrees around
E / P, uniform random neighbors, rows not sorted): the open checks look at sizes, checksums and
ranges only, and writing it takes seconds where a real 100M-edge build takes minutes.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

from bench_common import cpu_model, emit_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VERIFY_MODES = ("none", "fast", "full")


def _machine() -> dict:
    import numpy
    import psutil
    import torch
    cpu = cpu_model()
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "numpy": numpy.__version__,
            "torch": torch.__version__, "load_average_at_start": os.getloadavg()}


def synthetic_store(num_pins: int, num_boards: int, num_edges: int, seed: int = 0,
                    root: Path = HERE / "_data", verbose: bool = False) -> Path:
    """Write (once) and return a synthetic store of the given size (see the module docstring)."""
    import numpy as np

    from graph.csr import BipartiteCSR
    from graph.store import PinBoardGraph

    out = Path(root) / f"store_open_p{num_pins}_b{num_boards}_e{num_edges}_s{seed}"
    if (out / "manifest.json").is_file():
        return out
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)

    def direction(num_rows: int, num_cols: int):
        # degrees of a uniform multinomial, in chunks so no int64 [E] temporary is made
        counts = np.zeros(num_rows, np.int64)
        for start in range(0, num_edges, 1 << 24):
            counts += np.bincount(rng.integers(0, num_rows, min(1 << 24, num_edges - start)), minlength=num_rows)
        indptr = np.zeros(num_rows + 1, np.int64)
        np.cumsum(counts, out=indptr[1:])
        indices = rng.integers(0, num_cols, num_edges, dtype=np.int32)
        weights = rng.random(num_edges, dtype=np.float32)
        return indptr, indices, weights

    pin_indptr, pin_indices, pin_weights = direction(num_pins, num_boards)
    board_indptr, board_indices, board_weights = direction(num_boards, num_pins)
    csr = BipartiteCSR(num_pins, num_boards, pin_indptr, pin_indices, board_indptr, board_indices,
                       pin_weights=pin_weights, board_weights=board_weights)
    PinBoardGraph(csr).save(out)
    if verbose:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return out


def _evict(store: Path) -> None:
    """Drop the store's files (only those) from the page cache."""
    for p in store.iterdir():
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def measure(store: Path, repeats: int, cold: bool) -> dict:
    from graph.store import PinBoardGraph, check_structure

    samples: dict[str, list[float]] = {f"open_{v}_s": [] for v in VERIFY_MODES}
    samples["structure_check_s"] = []
    if not cold:  # warm the page cache: one untimed open of each kind
        for v in VERIFY_MODES:
            PinBoardGraph.open(store, verify=v)
    for _ in range(repeats):
        for v in VERIFY_MODES:  # interleaved, so drift hits every mode alike
            if cold:
                _evict(store)
            t0 = time.perf_counter()
            g = PinBoardGraph.open(store, verify=v)
            samples[f"open_{v}_s"].append(time.perf_counter() - t0)
            del g
        g = PinBoardGraph.open(store, verify="none")
        if cold:
            _evict(store)
        t0 = time.perf_counter()
        check_structure(g.csr_numpy(), store)
        samples["structure_check_s"].append(time.perf_counter() - t0)
        del g
    out: dict = {}
    for key, vals in samples.items():
        out[key] = statistics.median(vals)
        out[key + "_samples"] = [round(v, 5) for v in vals]
    return out


def run(args: argparse.Namespace) -> dict:
    from graph.storage import directory_bytes

    if args.store:
        store = args.store
        kind = "given"
    else:
        store = synthetic_store(args.pins, args.boards, args.edges, args.seed, args.data_dir, verbose=not args.json)
        kind = "synthetic (independent random CSR directions, see the module docstring)"
    manifest = json.loads((store / "manifest.json").read_text())
    results = measure(store, args.repeats, args.cold)
    topology = sum(manifest["arrays"][n]["bytes"] for n in ("pin_indptr", "pin_indices", "board_indptr", "board_indices"))
    return {
        "benchmark": "store_open",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(),
        "store": {"path": str(store), "kind": kind, "num_pins": manifest["num_pins"],
                  "num_boards": manifest["num_boards"], "num_edges": manifest["num_edges"],
                  "index_dtype": manifest["index_dtype"], "bytes": directory_bytes(store),
                  "topology_bytes": topology},
        "page_cache": "cold (store files evicted before each call)" if args.cold else "warm",
        "repeats": args.repeats,
        "results": results,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pins", type=int, default=1_000_000)
    ap.add_argument("--boards", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", type=Path, help="time this existing store instead of a synthetic one")
    ap.add_argument("--data-dir", type=Path, default=HERE / "_data",
                    help="where the synthetic store is cached (default benchmarks/_data, git-ignored)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="evict the store's files from the page cache before each call")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    report = run(args)
    if not emit_report(report, args.out, args.json):
        r, s = report["results"], report["store"]
        print(f"store {s['num_edges']:,} edges ({s['bytes'] / 2**20:,.0f} MiB, topology "
              f"{s['topology_bytes'] / 2**20:,.0f} MiB), page cache {report['page_cache']}, "
              f"median of {report['repeats']}:")
        for key in ("open_none_s", "open_fast_s", "open_full_s", "structure_check_s"):
            print(f"  {key:18s} {r[key] * 1e3:10.1f} ms   {r[key + '_samples']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
