"""Where the compiled graph build's time goes: its phases, and how its large arrays are faulted in.

    .venv/bin/python benchmarks/bench_build_phases.py [--repeats 11] [--json] [--out FILE]

Two measurements in this one process, on the benchmark graph's edge arrays (``powerlaw_edges.py``;
1M pins, 100k boards, 10M edges by default), after ``csr_compiled.warm_up()``:

  phases    ``--repeats`` compiled builds with float32 weights (``graph.csr_compiled.
            build_both_directions(..., phases=...)``): the wall seconds of each kernel and of
            faulting in the large arrays, per build; reported as the fastest and the median
            build and, per phase, its fastest and median time over the builds
  fault_in  ``--fault-mb`` MB faulted in by ``graph.csr_direction.empty_prefaulted``: one
            ``MAP_POPULATE`` call against one ``madvise(MADV_POPULATE_WRITE)`` a thread on a pool
            of as many threads as the build uses, interleaved, ``--repeats`` each

Builds in one warm process run faster than a fresh process's only build, which
``bench_graph_build.py`` times; this script says where the time goes, not what a user waits.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench_common import cpu_model, emit_report  # noqa: E402
from powerlaw_edges import add_data_dir_arg, add_graph_size_args, ensure_dataset  # noqa: E402


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


def _phases(pins, boards, weights, num_pins: int, num_boards: int, repeats: int) -> dict:
    from graph import csr_compiled
    from graph.csr import index_dtype_for

    idx_dtype = index_dtype_for(num_pins, num_boards)
    builds = []
    for _ in range(repeats):
        phases: dict = {}
        start = time.perf_counter()
        out = csr_compiled.build_both_directions(pins, boards, num_pins, num_boards, weights, None, idx_dtype,
                                                 phases=phases)
        builds.append({"total_s": time.perf_counter() - start, **phases})
        del out
    names = [k for k in builds[0] if k != "total_s"]
    totals = [b["total_s"] for b in builds]
    return {"threads": csr_compiled.threads_for(len(pins), num_boards),
            "total_ms": {"min": _ms(min(totals)), "median": _ms(statistics.median(totals))},
            "phase_ms": {k: {"min": _ms(min(b[k] for b in builds)),
                             "median": _ms(statistics.median(b[k] for b in builds))} for k in names},
            "builds": builds}


def _fault_in(megabytes: int, threads: int, repeats: int) -> dict:
    from graph.csr_direction import empty_prefaulted

    n = megabytes << 17  # int64 values
    samples: dict[str, list[float]] = {"one_map_populate": [], f"madvise_on_{threads}_threads": []}
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(lambda i: i, range(threads)))  # the threads exist before the clock
        for _ in range(repeats):
            for name, args in (("one_map_populate", ()), (f"madvise_on_{threads}_threads", (pool, threads))):
                start = time.perf_counter()
                array = empty_prefaulted(n, np.int64, *args)
                samples[name].append(time.perf_counter() - start)
                del array
    return {"megabytes": megabytes, "ms": {k: {"min": _ms(min(v)), "median": _ms(statistics.median(v))}
                                           for k, v in samples.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_graph_size_args(ap)
    add_data_dir_arg(ap)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--fault-mb", type=int, default=160)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args(argv)

    from graph import csr_compiled
    if not csr_compiled.available():
        print("numba does not import: no compiled build to measure", file=sys.stderr)
        return 1
    data = ensure_dataset(args.pins, args.boards, args.edges, args.seed, args.data_dir, verbose=not args.json)
    meta = json.loads((data / "meta.json").read_text())
    pins, boards = np.load(data / "edges_pins.npy"), np.load(data / "edges_boards.npy")
    weights = np.load(data / "edges_weights.npy")
    csr_compiled.warm_up()
    phases = _phases(pins, boards, weights, meta["num_pins"], meta["num_boards"], args.repeats)
    report = {"benchmark": "build_phases", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "machine": {"cpu": cpu_model(), "numpy": np.__version__}, "dataset": meta,
              "repeats": args.repeats, "phases": phases,
              "fault_in": _fault_in(args.fault_mb, phases["threads"], args.repeats)}
    if not emit_report(report, args.out, args.json):
        print(f"build, {phases['threads']} threads: fastest {phases['total_ms']['min']} ms, "
              f"median {phases['total_ms']['median']} ms")
        for name, ms in phases["phase_ms"].items():
            print(f"  {name:<16} fastest {ms['min']:>7} ms  median {ms['median']:>7} ms")
        for name, ms in report["fault_in"]["ms"].items():
            print(f"fault in {args.fault_mb} MB, {name:<22} fastest {ms['min']:>6} ms  median {ms['median']:>6} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
