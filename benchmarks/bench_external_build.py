"""Out-of-core graph build benchmark: wall time and peak resident memory, against the in-memory build.

    python benchmarks/bench_external_build.py --json                      # both runs below
    python benchmarks/bench_external_build.py --runs compare --repeats 3  # 10M only
    python benchmarks/bench_external_build.py --runs large --large-edges 100000000
    python benchmarks/bench_external_build.py --json --data-dir /scratch/bench   # data and stores outside the checkout

Runs (every build in its own fresh subprocess; the data come from ``powerlaw_edges.py``, as
Parquet under ``--data-dir``, default ``benchmarks/_data/``, git-ignored; the stores are built in
a work directory there too):
  large    ``build_graph_from_dataset(dir, out, memory_budget=BUDGET)`` (default: the library's
           default budget) on ``--large-pins/--large-boards/--large-edges`` (10M pins, 1M boards,
           100M edges: the 10M graph's proportions, ten times larger), once.
  compare  on the 10M-edge graph (1M pins, 100k boards): the out-of-core build with the same
           budget and the in-memory build (``load_dataset_graph`` + ``save``), alternating,
           ``--repeats`` times each; the two stores are checked byte for byte (sha256 of every
           file) and the report gives the median wall / CPU / peak-RSS ratios.

Peak RSS is the worker's ``ru_maxrss`` at the end (file pages it mapped included; interpreter and
imports included; ``rss_before_mb`` is its RSS after imports, before the build). Phases of the
out-of-core build are timed by wrapping its functions. ``--keep-data`` keeps the generated
datasets (at 100M edges: 1 GB of Parquet plus 2 GB of ``.npy`` dumps the generator writes for
the other benchmarks); without it they are deleted at the end.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
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

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


# ------------------------------------------------------------------------------ worker
def _worker(method: str, data: Path, out: Path, budget: str | None) -> dict:
    import psutil
    import numpy  # noqa: F401
    import torch  # noqa: F401  (the store imports it; not part of the build's time)
    import graph.dataset as gd
    import graph.external_build as eb
    from graph.store import PinBoardGraph

    rss_before = psutil.Process().memory_info().rss / 2**20
    phases: dict[str, float] = {}
    info: dict = {}

    def timed(owner, name: str, label: str) -> None:
        fn = getattr(owner, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[label] = phases.get(label, 0.0) + time.perf_counter() - t0
        setattr(owner, name, wrapper)

    def capture_plan(*a, **k):
        plan = plan_build(*a, **k)
        info["plan"] = {f: getattr(plan, f) for f in plan.__dataclass_fields__}
        info["baseline_mb"] = round(a[4] / 2**20, 1)
        return plan
    plan_build = eb.plan_build
    eb.plan_build = capture_plan

    timed(gd, "read_nodes", "read_nodes_s")
    timed(eb, "read_nodes", "read_nodes_s")  # bound by name in graph.external_build
    if method == "external":
        for name, label in (("_bucket_input", "bucket_input_s"), ("_pin_direction", "sort_by_pin_s"),
                            ("_board_direction", "sort_by_board_s"), ("_write_manifest", "ids_features_manifest_s")):
            timed(eb._Build, name, label)
        timed(eb, "_write_splits", "splits_s")
    t0, c0 = time.perf_counter(), time.process_time()
    if method == "external":
        g = gd.build_graph_from_dataset(data, out, progress=False,
                                        memory_budget=budget or eb.DEFAULT_MEMORY_BUDGET)
    else:  # the in-memory build, whatever the file size
        gd.load_dataset_graph(data, progress=False).save(out)
        g = PinBoardGraph.open(out)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"method": method, "wall_s": round(wall, 3), "cpu_s": round(cpu, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_mb": round(rss_before, 1), "num_edges": g.num_edges,
            "phases_s": {k: round(v, 3) for k, v in phases.items()}, **info}


# ------------------------------------------------------------------------------ driver
def _run_worker(method: str, data: Path, out: Path, budget: str | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", method, "--data", str(data),
           "--out", str(out)] + (["--budget", budget] if budget else [])
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode:
        raise RuntimeError(f"{method} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _digest(path: Path) -> dict[str, str]:
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                while chunk := fh.read(16 << 20):
                    h.update(chunk)
            out[p.name] = h.hexdigest()
    return out


def _dataset(pins: int, boards: int, edges: int, seed: int, root: Path) -> tuple[Path, dict]:
    sys.path.insert(0, str(HERE))
    from powerlaw_edges import ensure_dataset
    t0 = time.perf_counter()
    d = ensure_dataset(pins, boards, edges, seed, root)
    meta = json.loads((d / "meta.json").read_text())
    meta["edges_parquet_mb"] = round((d / "edges.parquet").stat().st_size / 2**20, 1)
    meta["prepare_s"] = round(time.perf_counter() - t0, 1)
    return d, meta


def run_large(args, work: Path) -> dict:
    data, meta = _dataset(args.large_pins, args.large_boards, args.large_edges, args.seed, args.data_dir)
    store = work / "large_store"
    res = _run_worker("external", data, store, args.budget)
    from graph.storage import directory_bytes
    res["store_mb"] = round(directory_bytes(store) / 2**20, 1)
    shutil.rmtree(store, ignore_errors=True)
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return {"data": meta, "result": res}


def run_compare(args, work: Path) -> dict:
    data, meta = _dataset(args.pins, args.boards, args.edges, args.seed, args.data_dir)
    samples: dict[str, list[dict]] = {"external": [], "memory": []}
    identical = None
    for r in range(args.repeats):
        order = ("external", "memory") if r % 2 == 0 else ("memory", "external")
        for method in order:
            samples[method].append(_run_worker(method, data, work / method, args.budget))
        if identical is None:
            identical = _digest(work / "external") == _digest(work / "memory")
        for method in order:
            shutil.rmtree(work / method, ignore_errors=True)

    def med(method: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[method])
    ratios = {key: round(med("external", key) / med("memory", key), 3)
              for key in ("wall_s", "cpu_s", "peak_rss_mb")}
    if not args.keep_data:
        shutil.rmtree(data, ignore_errors=True)
    return {"data": meta, "identical_stores": identical, "external_over_memory": ratios,
            "median": {m: {k: med(m, k) for k in ("wall_s", "cpu_s", "peak_rss_mb")} for m in samples},
            "samples": samples}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default="compare,large", help="comma list of: compare, large")
    ap.add_argument("--budget", default=None, help="memory budget (default: the library default)")
    ap.add_argument("--pins", type=int, default=1_000_000)
    ap.add_argument("--boards", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--large-pins", type=int, default=10_000_000)
    ap.add_argument("--large-boards", type=int, default=1_000_000)
    ap.add_argument("--large-edges", type=int, default=100_000_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="compare run: builds per method")
    ap.add_argument("--keep-data", action="store_true")
    ap.add_argument("--data-dir", type=Path, default=HERE / "_data",
                    help="where the datasets and the work directory go (default benchmarks/_data, git-ignored)")
    ap.add_argument("--json", action="store_true", help="print only the JSON report")
    ap.add_argument("--out", type=Path, default=None, help="also write the JSON report here")
    ap.add_argument("--worker", choices=("external", "memory"), help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(args.worker, args.data, args.out, args.budget)))
        return 0
    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(HERE))
    import graph.external_build as eb
    from bench_common import emit_report
    work = args.data_dir / f"bench_external_{os.getpid()}"
    work.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "external_build", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "loadavg_start": os.getloadavg()},
              "budget": args.budget or eb.DEFAULT_MEMORY_BUDGET}
    try:
        for run in args.runs.split(","):
            t0 = time.perf_counter()
            report[run] = {"compare": run_compare, "large": run_large}[run](args, work)
            report[run]["loadavg_end"] = os.getloadavg()
            report[run]["run_s"] = round(time.perf_counter() - t0, 1)
            if not args.json:
                print(json.dumps({run: report[run]}, indent=1), file=sys.stderr)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not emit_report(report, args.out, args.json):
        for run in args.runs.split(","):
            r = report[run]
            res = r["result"] if run == "large" else r["median"]["external"]
            line = f"{run}: out-of-core {res['wall_s']:.3g} s, peak {res['peak_rss_mb']:.0f} MB"
            if run == "compare":
                line += f"; external/memory {r['external_over_memory']}, identical stores: {r['identical_stores']}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
