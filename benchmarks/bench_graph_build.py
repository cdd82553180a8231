"""Graph build benchmark: our store build against scipy and DGL, on the same edges.

    python benchmarks/bench_graph_build.py --json                       # 1M pins, 100k boards, 10M edges
    python benchmarks/bench_graph_build.py --pins 10000 --boards 1000 --edges 100000 --repeats 3
    python benchmarks/bench_graph_build.py --json --data-dir /scratch/bench   # data and store outside the checkout

The edges come from ``benchmarks/powerlaw_edges.py`` (deterministic, cached in ``--data-dir``,
default ``benchmarks/_data/``; the store is written beside them). Every method runs in its own fresh subprocess, once per repeat, methods
interleaved in rotating order (so machine noise hits all of them alike); the report gives the
median over repeats, the minimum and every sample, and compares methods by the median of
per-repeat ratios (wall and CPU time). Peak RSS is the subprocess's ``ru_maxrss`` (interpreter
and imports included; ``rss_before_mb`` is its RSS just before the timed part).

Methods (``build_s`` is the wall time of the timed part of each, ``build_cpu_s`` the CPU time
of the whole process over it, all threads: less sensitive to other load on a shared machine):
  ours_dataset     ``graph.dataset.build_graph_from_dataset(dir, out)``: Parquet in, store on disk
                   (read + id mapping + build + splits + save with checksums and fsync + open);
                   phases timed separately where the functions exist
  ours_kernel      ``PinBoardGraph.from_edges(pins, boards, P, B, weights)`` on the edge arrays
                   (validation + sort + dedup with summed weights, both directions): the
                   compiled build (``graph.csr_compiled``, numba) once its kernels are loaded;
                   their once-per-process start (numba's import, LLVM, the kernels from numba's
                   cache: ``csr_compiled.warm_up``) runs before the clock and is reported as
                   ``kernel_first_use_s``, as DGL's import is not timed; the comparison
                   ``..._with_first_use`` adds it back (a process's only build)
  ours_topology    the same without weights (the work DGL and scipy's pattern do)
  ours_numpy       ``ours_kernel`` with the compiled build turned off: the numpy kernel
                   (``graph.csr_direction``), the build before the compiled one
  scipy            ``coo_array((w, (pins, boards))).tocsr()`` and of the transpose (both
                   directions; tocsr sums duplicates and sorts indices, as we do)
  dgl_two_relations / dgl_one_relation: see ``benchmarks/dgl_side/build_graph.py`` (side env)
  open             ``PinBoardGraph.open`` of the store written by ours_dataset: verify "fast"
                   (the default), "none" and "full", median of many calls in one process

Array-input methods load ``edges_*.npy`` (the same columns as edges.parquet) before the clock
starts, so they compare the build itself; ours_dataset includes Parquet decoding.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench_common import cpu_model, emit_report

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_DGL_PYTHON = REPO / ".venv-dgl" / "bin" / "python"
ARRAY_METHODS = ("ours_kernel", "ours_topology", "ours_numpy", "scipy")
DGL_METHODS = ("dgl_two_relations", "dgl_one_relation")
TOPOLOGY_FILES = ("pin_indptr", "pin_indices", "board_indptr", "board_indices")


# ------------------------------------------------------------------------------ workers
def _rss_mb() -> float:
    import psutil
    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _load_arrays(data: Path):
    import numpy as np
    meta = json.loads((data / "meta.json").read_text())
    return (meta, np.load(data / "edges_pins.npy"), np.load(data / "edges_boards.npy"),
            np.load(data / "edges_weights.npy"))


def _worker_arrays(method: str, data: Path) -> dict:
    import numpy as np
    import torch  # noqa: F401  (imported before the clock, as from_edges needs it)
    meta, pins, boards, weights = _load_arrays(data)
    P, B = meta["num_pins"], meta["num_boards"]
    rss_before = _rss_mb()
    out: dict = {}
    if method in ("ours_kernel", "ours_topology", "ours_numpy"):
        from graph import PinBoardGraph, csr_compiled
        if method == "ours_numpy":
            csr_compiled.set_enabled(False)
        else:
            t0 = time.perf_counter()
            csr_compiled.warm_up()
            out["kernel_first_use_s"] = time.perf_counter() - t0
            rss_before = _rss_mb()
        t0, c0 = time.perf_counter(), time.process_time()
        g = PinBoardGraph.from_edges(pins, boards, num_pins=P, num_boards=B,
                                     weights=None if method == "ours_topology" else weights)
        out["build_s"], out["build_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        csr = g.csr_numpy()
        topo = sum(getattr(csr, n).nbytes for n in TOPOLOGY_FILES)
        out.update(num_edges=g.num_edges, index_dtype=str(csr.pin_indices.dtype),
                   topology_bytes_per_edge=topo / g.num_edges)
    elif method == "scipy":
        import scipy
        import scipy.sparse as sp
        t0, c0 = time.perf_counter(), time.process_time()
        a = sp.coo_array((weights, (pins, boards)), shape=(P, B)).tocsr()
        at = sp.coo_array((weights, (boards, pins)), shape=(B, P)).tocsr()
        out["build_s"], out["build_cpu_s"] = time.perf_counter() - t0, time.process_time() - c0
        assert a.has_sorted_indices and at.has_sorted_indices and a.nnz == at.nnz
        topo = sum(m.indptr.nbytes + m.indices.nbytes for m in (a, at))
        out.update(num_edges=int(a.nnz), index_dtype=str(a.indices.dtype),
                   topology_bytes_per_edge=topo / a.nnz, scipy=scipy.__version__)
    else:
        raise ValueError(method)
    out.update(peak_rss_mb=_peak_mb(), rss_before_mb=rss_before, input="npy arrays (load not timed)")
    return out


def _worker_dataset(data: Path, store: Path) -> dict:
    """build_graph_from_dataset end to end, with its phases timed by wrapping module functions."""
    import numpy as np  # noqa: F401
    import torch  # noqa: F401
    import graph.dataset as gd
    from graph.store import PinBoardGraph

    phases: dict[str, float] = {}

    def timed(owner, name: str, label: str) -> None:
        fn = getattr(owner, name, None)
        if fn is None:
            return
        is_cls = isinstance(owner, type)
        raw = owner.__dict__.get(name) if is_cls else fn

        def wrapper(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t
        if is_cls and isinstance(raw, classmethod):
            setattr(owner, name, classmethod(lambda cls, *a, **k: wrapper(*a, **k)))
        else:
            setattr(owner, name, wrapper)

    timed(gd, "read_nodes", "read_nodes_s")
    timed(gd, "_read_edges", "read_edges_s")
    timed(PinBoardGraph, "from_edges", "build_csr_s")
    timed(gd, "make_splits", "splits_s")
    timed(PinBoardGraph, "save", "save_s")
    timed(PinBoardGraph, "open", "open_s")
    shutil.rmtree(store, ignore_errors=True)
    rss_before = _rss_mb()
    t0, c0 = time.perf_counter(), time.process_time()
    g = gd.build_graph_from_dataset(data, store, progress=False)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    manifest = json.loads((store / "manifest.json").read_text())
    arrays = manifest["arrays"]
    E = g.num_edges
    topo_bytes = sum(arrays[n]["bytes"] for n in TOPOLOGY_FILES)
    total_bytes = sum(p.stat().st_size for p in store.iterdir() if p.is_file())
    return {"build_s": total, "build_cpu_s": cpu, **phases, "num_edges": E, "index_dtype": arrays["pin_indices"]["dtype"],
            "topology_bytes_per_edge": topo_bytes / E, "store_bytes_per_edge": total_bytes / E,
            "store_bytes": total_bytes, "store_files": sorted(p.name for p in store.iterdir()),
            "peak_rss_mb": _peak_mb(), "rss_before_mb": rss_before, "input": "parquet dataset dir"}


def _worker_open(store: Path, calls: int) -> dict:
    import torch  # noqa: F401
    from graph import PinBoardGraph
    out: dict = {}
    for verify, n in (("fast", calls), ("none", calls), ("full", max(3, calls // 10))):
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            g = PinBoardGraph.open(store, verify=verify)
            times.append(time.perf_counter() - t0)
            del g
        out[f"open_{verify}_s"] = statistics.median(times)
        out[f"open_{verify}_first_s"] = times[0]
        out[f"open_{verify}_calls"] = n
    out["peak_rss_mb"] = _peak_mb()
    return out


# ------------------------------------------------------------------------------ driver
def _run_child(cmd: list[str], what: str) -> dict:
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _machine(dgl_versions: dict | None) -> dict:
    import numpy
    import psutil
    import pyarrow
    import scipy
    import torch
    cpu = cpu_model()
    return {
        "cpu": cpu, "logical_cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(), "python": platform.python_version(),
        "numpy": numpy.__version__, "torch": torch.__version__, "scipy": scipy.__version__,
        "pyarrow": pyarrow.__version__, "torch_threads": torch.get_num_threads(),
        "dgl_env": dgl_versions,
        "load_average_at_start": os.getloadavg(),
    }


def _summarize(samples: list[dict]) -> dict:
    out: dict = {}
    for key in samples[0]:
        vals = [s[key] for s in samples if key in s]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[key] = statistics.median(vals)
            if key.endswith("_s") and len(vals) > 1:
                out[key + "_min"] = min(vals)
                out[key + "_samples"] = [round(v, 4) for v in vals]
        else:
            out[key] = vals[0]
    return out


def run(args: argparse.Namespace) -> dict:
    sys.path.insert(0, str(HERE))
    from powerlaw_edges import ensure_dataset

    data = ensure_dataset(args.pins, args.boards, args.edges, args.seed, args.data_dir, verbose=not args.json)
    meta = json.loads((data / "meta.json").read_text())
    store = data.parent / f"store_{data.name}"
    me = [sys.executable, str(Path(__file__).resolve())]
    dgl_python = Path(args.dgl_python)
    methods = ["ours_dataset", *ARRAY_METHODS]
    skipped = {}
    if dgl_python.exists():
        methods += DGL_METHODS
    else:
        skipped = {m: f"{dgl_python} not found: run bash benchmarks/make_dgl_env.sh" for m in DGL_METHODS}
    if args.methods:
        wanted = set(args.methods.split(","))
        unknown = wanted - {"ours_dataset", *ARRAY_METHODS, *DGL_METHODS}
        if unknown:
            raise SystemExit(f"--methods: unknown method(s) {sorted(unknown)}")
        methods = [m for m in methods if m in wanted]
    samples: dict[str, list[dict]] = {m: [] for m in methods}
    for r in range(args.repeats):
        k = r % len(methods)
        for m in methods[k:] + methods[:k]:
            if m in DGL_METHODS:
                cmd = [str(dgl_python), str(HERE / "dgl_side" / "build_graph.py"), "--data", str(data),
                       "--variant", m.removeprefix("dgl_")]
            elif m == "ours_dataset":
                cmd = me + ["--worker", m, "--data", str(data), "--store", str(store)]
            else:
                cmd = me + ["--worker", m, "--data", str(data)]
            s = _run_child(cmd, m)
            samples[m].append(s)
            if not args.json:
                print(f"repeat {r + 1}/{args.repeats} {m:18s} build {s['build_s']:.3f}s "
                      f"peak {s['peak_rss_mb']:.0f} MB", file=sys.stderr)
    results = {m: _summarize(v) for m, v in samples.items()}
    if store.exists():
        results["open"] = _run_child(me + ["--worker", "open", "--store", str(store),
                                           "--open-calls", str(args.open_calls)], "open")
    if not args.keep_store:
        shutil.rmtree(store, ignore_errors=True)
    dgl_versions = results.get("dgl_two_relations", {}).get("versions")

    def ratio(a: str, b: str, key: str = "build_s") -> float | None:
        """Median over repeats of the per-repeat ratio a / b (both ran in the same repeat)."""
        if a in samples and b in samples:
            return statistics.median(x[key] / y[key] for x, y in zip(samples[a], samples[b]))
        return None

    pairs = [("dgl_two_relations", "ours_kernel"), ("dgl_two_relations", "ours_topology"),
             ("dgl_one_relation", "ours_kernel"), ("dgl_one_relation", "ours_topology"),
             ("dgl_one_relation", "ours_numpy"), ("ours_numpy", "ours_kernel"),
             ("dgl_two_relations", "ours_dataset"), ("scipy", "ours_kernel"),
             ("scipy", "ours_topology")]
    comparisons = {f"{a}_over_{b}": ratio(a, b) for a, b in pairs}
    comparisons.update({f"{a}_over_{b}_cpu": ratio(a, b, "build_cpu_s") for a, b in pairs})
    if "dgl_one_relation" in samples and "ours_kernel" in samples:  # a process's only build
        comparisons["dgl_one_relation_over_ours_kernel_with_first_use"] = statistics.median(
            x["build_s"] / (y["build_s"] + y.get("kernel_first_use_s", 0.0))
            for x, y in zip(samples["dgl_one_relation"], samples["ours_kernel"]))
    comparisons = {k: v for k, v in comparisons.items() if v is not None}
    topo = results.get("ours_dataset", {}).get("topology_bytes_per_edge")
    open_fast = results.get("open", {}).get("open_fast_s")
    speedup = comparisons.get("dgl_two_relations_over_ours_kernel")
    speedup_one = comparisons.get("dgl_one_relation_over_ours_kernel")
    targets = {
        "topology_bytes_per_edge<=12": {"value": topo, "met": None if topo is None else topo <= 12},
        "open_fast_s<=0.050": {"value": open_fast, "met": None if open_fast is None else open_fast <= 0.050},
        "build_vs_dgl_two_relations>=1.5x (ours_kernel)": {
            "value": speedup, "met": None if speedup is None else speedup >= 1.5},
        "build_vs_dgl_one_relation>=1.5x (ours_kernel)": {
            "value": speedup_one, "met": None if speedup_one is None else speedup_one >= 1.5},
    }
    return {
        "benchmark": "graph_build",
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": _machine(dgl_versions),
        "dataset": {**meta, "dir": str(data.relative_to(REPO)) if data.is_relative_to(REPO) else str(data)},
        "repeats": args.repeats,
        "methods": results,
        "skipped": skipped,
        "comparisons": comparisons,
        "targets": targets,
    }


def _print_table(report: dict) -> None:
    print(f"{'method':20s} {'build_s':>9s} {'cpu_s':>9s} {'peak_MB':>8s} {'topo_B/E':>9s}")
    for m, r in report["methods"].items():
        if "build_s" in r:
            print(f"{m:20s} {r['build_s']:9.3f} {r['build_cpu_s']:9.3f} {r['peak_rss_mb']:8.0f} "
                  f"{r.get('topology_bytes_per_edge', float('nan')):9.2f}")
    o = report["methods"].get("open")
    if o:
        print(f"open: fast {o['open_fast_s'] * 1e3:.2f} ms, none {o['open_none_s'] * 1e3:.2f} ms, "
              f"full {o['open_full_s'] * 1e3:.0f} ms")
    for k, v in report["comparisons"].items():
        if v is not None:
            print(f"{k}: {v:.2f}x")
    for k, v in report["targets"].items():
        if v["met"] is not None:
            print(f"target {k}: {v['value']:.4g} -> {'met' if v['met'] else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(HERE))
    from powerlaw_edges import add_data_dir_arg, add_graph_size_args

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_graph_size_args(ap)
    add_data_dir_arg(ap)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--open-calls", type=int, default=50)
    ap.add_argument("--methods", help="comma-separated subset of: ours_dataset, ours_kernel, "
                    "ours_topology, ours_numpy, scipy, dgl_two_relations, dgl_one_relation (default all)")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    ap.add_argument("--keep-store", action="store_true", help="keep the store ours_dataset wrote")
    ap.add_argument("--dgl-python", default=os.environ.get("DGL_PYTHON", str(DEFAULT_DGL_PYTHON)),
                    help="python of the DGL side env (default .venv-dgl/bin/python, or $DGL_PYTHON)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        if args.worker == "ours_dataset":
            res = _worker_dataset(args.data, args.store)
        elif args.worker == "open":
            res = _worker_open(args.store, args.open_calls)
        else:
            res = _worker_arrays(args.worker, args.data)
        print(json.dumps(res))
        return 0

    report = run(args)
    if not emit_report(report, args.out, args.json):
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
