"""Sampler benchmark: our random walks, PinSage neighborhoods and fanout against DGL's, same edges.

    python benchmarks/bench_sampling.py --json                  # 1M pins, 100k boards, 10M edges
    python benchmarks/bench_sampling.py --json --threads 1,2 --repeats 7 --out results.json
    python benchmarks/bench_sampling.py --json --device auto    # CPU, and CUDA side by side when available
    python benchmarks/bench_sampling.py --json --device cuda --no-dgl      # the GPU only
    python benchmarks/bench_sampling.py --pins 10000 --boards 1000 --edges 100000 --repeats 3
    python benchmarks/bench_sampling.py --json --data-dir /scratch/bench   # edges cached outside the checkout

The edges come from ``benchmarks/powerlaw_edges.py`` (deterministic, cached in ``--data-dir``,
default ``benchmarks/_data/``); our store deduplicates them and DGL gets exactly the deduplicated edges
(``benchmarks/dgl_side/sampling_dgl.py serve``, a persistent process in the side environment
``.venv-dgl``, made by ``benchmarks/make_dgl_env.sh``). Workloads:

  random_walk  100k seeds, 4 pin -> board -> pin traversals = 8 steps per walk; steps per second
               (ours ``random_walk``; DGL ``random_walk`` with metapath [saved_to, contains] * 4)
  pinsage      1024 seeds, 200 walks, 3 traversals, termination 0.5, T = 10; neighborhoods per
               second (ours ``PinSageSampler.sample``; DGL ``PinSAGESampler``)
  fanout       1024 seed pins, fanouts [10, 5] (10 boards per pin, then 5 pins per board), uniform
               without replacement, relabeled to local ids; seeds per second (ours
               ``FanoutSampler``; DGL ``NeighborSampler.sample_blocks``)
  fanout_weighted  the same, drawn in proportion to the edge weights (the graph is then built with
               the dataset's weights; DGL ``NeighborSampler(prob="weight")``)
  fanout_4hop  fanouts [10, 5, 10, 5], uniform

``--workloads`` picks a subset (default: all). ``--block N`` makes every method run N calls back
to back per round (the round's sample is their median): each side's steady state, as in a
training loop, instead of a call right after the other process's (on 2 cores DGL's OpenMP
workers and evicted caches slow the next call down); ``--settle-ms`` idles before every call.

Every method runs once per round, methods in a rotating order, ours in this process and DGL's in
its server, after one warm-up call each; seeds are ``numpy.random.default_rng(round).integers``
for both. The report gives each method's median over rounds, every sample, the ratio of medians
(ours / DGL throughput) and whether the targets hold (random walk >= 3x DGL, PinSage >= 2x DGL,
fanout >= 1.5x DGL;
on a GPU: >= 100M walk steps per second). The machine is shared: compare only within one run.

Devices (``--device``): ``auto`` (default) runs our samplers on the CPU and, when CUDA is
available, on the GPU too (CSR tensors moved with ``SamplingGraph.from_graph(g, "cuda")``), in the
same rounds; the GPU methods are named ``gpu_<workload>`` next to ``ours_<workload>`` (CPU), and
``side_by_side`` gives both throughputs and the GPU / CPU speed-up. Without CUDA the report says
``"cuda": "not available"``. ``cpu`` or ``cuda`` runs that device only.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from graph import PinBoardGraph  # noqa: E402
from bench_common import emit_report  # noqa: E402
from powerlaw_edges import add_data_dir_arg, add_graph_size_args, ensure_dataset  # noqa: E402
from sampling import SamplingGraph, build_sampler, load_sampler_config, set_num_threads  # noqa: E402

DEFAULT_DGL_PYTHON = REPO / ".venv-dgl" / "bin" / "python"
TARGETS = {"random_walk": 3.0, "pinsage": 2.0, "fanout": 1.5}
WORKLOADS = ("random_walk", "pinsage", "fanout", "fanout_weighted", "fanout_4hop")
GPU_TARGET_STEPS = 100e6


class DGLServer:
    """The persistent DGL process: one JSON command per line, one JSON reply per line."""

    def __init__(self, python: Path, edges_dir: Path, threads: int) -> None:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), DGLBACKEND="pytorch")
        self.proc = subprocess.Popen([str(python), str(HERE / "dgl_side" / "sampling_dgl.py"), "serve",
                                      "--edges", str(edges_dir), "--threads", str(threads)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env)
        self.info = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read()
            raise RuntimeError(f"DGL server died: {err[-2000:]}")
        return json.loads(line)

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except Exception:  # pragma: no cover
            self.proc.kill()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_graph_size_args(ap)
    add_data_dir_arg(ap)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", default="2",
                    help="comma-separated thread counts, e.g. 1,2: DGL's OpenMP threads and torch's global "
                         "setting, one run each")
    ap.add_argument("--sampler-threads", default="1",
                    help="threads of our samplers' CPU kernels (sampling.set_num_threads; default 1); "
                         "'torch' uses torch's global setting, i.e. --threads")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: CPU, plus CUDA side by side when available; cpu / cuda: that device only")
    ap.add_argument("--walk-seeds", type=int, default=100_000)
    ap.add_argument("--walk-hops", type=int, default=4)
    ap.add_argument("--pinsage-seeds", type=int, default=1024)
    ap.add_argument("--fanout-seeds", type=int, default=1024)
    ap.add_argument("--workloads", default=",".join(WORKLOADS),
                    help=f"comma-separated subset of {', '.join(WORKLOADS)} (default: all)")
    ap.add_argument("--block", type=int, default=1,
                    help="calls per method per round, back to back (a round's sample is their median): "
                         "each method then runs in its steady state, as in a training loop, instead "
                         "of right after the other process's call")
    ap.add_argument("--settle-ms", type=float, default=0.0,
                    help="idle this long before every timed call, so that no method runs while the other "
                         "process's threads are still busy (OpenMP workers spin after a parallel region)")
    ap.add_argument("--no-dgl", action="store_true")
    ap.add_argument("--dgl-python", type=Path, default=DEFAULT_DGL_PYTHON)
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    ap.add_argument("--out", type=Path, help="also write the JSON report here")
    args = ap.parse_args(argv)
    threads_list = [int(t) for t in args.threads.split(",")]
    wanted = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = [w for w in wanted if w not in WORKLOADS]
    if unknown or not wanted:
        ap.error(f"--workloads {args.workloads!r}: unknown {unknown}; choose from {', '.join(WORKLOADS)}")
    weighted_graph = any(op == "fanout_weighted" for op in wanted)
    set_num_threads(None if args.sampler_threads == "torch" else int(args.sampler_threads))
    cuda_ok = torch.cuda.is_available()
    if args.device == "cuda" and not cuda_ok:
        ap.error("--device cuda: CUDA is not available on this machine (use auto or cpu)")
    # who -> device: "ours" = our samplers on the CPU, "gpu" = the same on CUDA
    devices = {}
    if args.device in ("auto", "cpu"):
        devices["ours"] = torch.device("cpu")
    if args.device == "cuda" or (args.device == "auto" and cuda_ok):
        devices["gpu"] = torch.device("cuda")

    data = ensure_dataset(args.pins, args.boards, args.edges, args.seed, args.data_dir, verbose=not args.json)
    meta = json.loads((data / "meta.json").read_text())
    t0 = time.perf_counter()
    g = PinBoardGraph.from_edges(np.load(data / "edges_pins.npy"), np.load(data / "edges_boards.npy"),
                                 meta["num_pins"], meta["num_boards"],
                                 weights=np.load(data / "edges_weights.npy") if weighted_graph else None)
    build_s = time.perf_counter() - t0
    sgs = {who: SamplingGraph.from_graph(g, dev) for who, dev in devices.items()}
    P = g.num_pins

    use_dgl = not args.no_dgl and args.dgl_python.exists()
    dgl_note = None if use_dgl else ("--no-dgl" if args.no_dgl else f"{args.dgl_python} missing (make dgl-env)")
    tmp = tempfile.TemporaryDirectory(prefix="bench_sampling_")
    if use_dgl:
        pins, boards = g.edges()
        np.save(Path(tmp.name) / "edges_pins.npy", pins.numpy())
        np.save(Path(tmp.name) / "edges_boards.npy", boards.numpy())
        if weighted_graph:  # the merged (summed) weights of the deduplicated edges, pin-major order
            np.save(Path(tmp.name) / "edges_weights.npy", g.pin_weights.numpy())
        (Path(tmp.name) / "meta.json").write_text(json.dumps({"num_pins": P, "num_boards": g.num_boards}))
        del pins, boards

    all_workloads = {
        "random_walk": {"num_seeds": args.walk_seeds, "num_hops": args.walk_hops},
        "pinsage": {"num_seeds": args.pinsage_seeds, "num_traversals": 3, "termination_prob": 0.5,
                    "num_random_walks": 200, "num_neighbors": 10},
        "fanout": {"num_seeds": args.fanout_seeds, "fanouts": [10, 5], "weighted": False},
        "fanout_weighted": {"num_seeds": args.fanout_seeds, "fanouts": [10, 5], "weighted": True},
        "fanout_4hop": {"num_seeds": args.fanout_seeds, "fanouts": [10, 5, 10, 5], "weighted": False},
    }
    workloads = {op: all_workloads[op] for op in wanted}
    # The samplers as sampling.build_sampler makes them from these workloads (seed 0, the graph's device).
    configs = {
        "random_walk": {"kind": "random_walk", "random_walk": {"num_hops": args.walk_hops}},
        "pinsage": {"kind": "pinsage", "pinsage": {k: all_workloads["pinsage"][k] for k in
                    ("num_traversals", "termination_prob", "num_random_walks", "num_neighbors")}},
        **{op: {"kind": "fanout", "fanout": {"fanouts": w["fanouts"], "weighted": w["weighted"]}}
           for op, w in all_workloads.items() if op.startswith("fanout")},
    }
    samplers = {op: {who: build_sampler(load_sampler_config({"seed": 0, "exclude_splits": [], **configs[op]}), sg)
                     for who, sg in sgs.items()} for op in workloads}
    gen = {who: torch.Generator(device=dev).manual_seed(0) for who, dev in devices.items()}

    def seeds(r: int, n: int, device: torch.device) -> torch.Tensor:
        return torch.from_numpy(np.random.default_rng(r).integers(0, P, n)).to(device)

    def ours(op: str, r: int, who: str = "ours") -> float:
        w, device = workloads[op], devices[who]
        s = seeds(r, w["num_seeds"], device)
        _sync(device)
        t = time.perf_counter()
        if op == "random_walk":
            samplers[op][who].sample(s, generator=gen[who])
        else:
            samplers[op][who].sample(s)
        _sync(device)
        return time.perf_counter() - t

    def dgl_call(server: DGLServer, op: str, r: int) -> dict:
        return server.call(op="fanout" if op.startswith("fanout") else op, seed=r, **workloads[op])

    def units(op: str, seconds: float) -> float:
        w = workloads[op]
        if op == "random_walk":
            return w["num_seeds"] * 2 * w["num_hops"] / seconds
        return w["num_seeds"] / seconds

    unit_names = {op: {"random_walk": "walk steps/s", "pinsage": "neighborhoods/s"}.get(op, "seeds/s")
                  for op in all_workloads}
    report: dict = {
        "benchmark": "sampling", "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "graph": {"num_pins": P, "num_boards": g.num_boards, "num_edges": g.num_edges,
                  "input_edges": meta["num_edges"], "dataset": data.name, "build_s": round(build_s, 3)},
        "workloads": workloads, "repeats": args.repeats, "block": args.block, "settle_ms": args.settle_ms, "device": args.device,
        "devices": {who: str(dev) for who, dev in devices.items()},
        "cuda": torch.cuda.get_device_name(0) if cuda_ok else "not available",
        "sampler_threads": args.sampler_threads,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "loadavg_start": _loadavg(),
                    "gpu": torch.cuda.get_device_name(0) if "gpu" in devices else None},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()},
        "runs": {},
    }
    if dgl_note:
        report["dgl"] = dgl_note
    try:
        for threads in threads_list:
            torch.set_num_threads(threads)
            server = DGLServer(args.dgl_python, Path(tmp.name), threads) if use_dgl and "ours" in devices else None
            if server:
                report["versions"]["dgl_side"] = server.info["versions"]
                report["graph"]["dgl_build_s"] = round(server.info["build_s"], 3)
            whos = list(devices) + (["dgl"] if server and "ours" in devices else [])
            methods = [(op, who) for op in workloads for who in whos]
            samples: dict = {f"{who}_{op}": [] for op, who in methods}
            for op, who in methods:  # warm-up
                ours(op, 10_000, who) if who != "dgl" else dgl_call(server, op, 10_000)
            for r in range(args.repeats):
                k = r % len(methods)
                for op, who in methods[k:] + methods[:k]:
                    block = []
                    for b in range(args.block):    # seeds differ per call: round * block + b
                        if args.settle_ms:
                            time.sleep(args.settle_ms / 1000)
                        rb = r * args.block + b
                        block.append(ours(op, rb, who) if who != "dgl" else dgl_call(server, op, rb)["seconds"])
                    samples[f"{who}_{op}"].append(statistics.median(block))
            if server:
                server.close()
            run: dict = {"threads": threads, "dgl_threads": threads if server else None,
                         "ours_threads": torch.get_num_threads() if args.sampler_threads == "torch" else int(args.sampler_threads),
                         "methods": {}}
            for name, xs in samples.items():
                op = name.split("_", 1)[1]
                med = statistics.median(xs)
                run["methods"][name] = {"median_s": med, "min_s": min(xs), "throughput": units(op, med),
                                        "best_throughput": units(op, min(xs)), "unit": unit_names[op],
                                        "samples_s": [round(x, 5) for x in xs]}
            if "dgl" in whos:
                # ratio of medians, and the median of per-round ratios (both methods ran in the same
                # round, so they saw the same machine load)
                run["ratios"] = {op: run["methods"][f"ours_{op}"]["throughput"] / run["methods"][f"dgl_{op}"]["throughput"]
                                 for op in workloads}
                run["ratios_per_round_median"] = {
                    op: statistics.median(d / o for o, d in zip(samples[f"ours_{op}"], samples[f"dgl_{op}"]))
                    for op in workloads}
                run["targets_met"] = {op: min(run["ratios"][op], run["ratios_per_round_median"][op]) >= TARGETS[op]
                                      for op in TARGETS if op in workloads}
            if "gpu" in devices:
                if "random_walk" in workloads:
                    run["gpu_target_met"] = run["methods"]["gpu_random_walk"]["throughput"] >= GPU_TARGET_STEPS
                if "ours" in devices:
                    run["side_by_side"] = {
                        op: {"unit": unit_names[op], "cpu": run["methods"][f"ours_{op}"]["throughput"],
                             "cuda": run["methods"][f"gpu_{op}"]["throughput"],
                             "cuda_over_cpu": run["methods"][f"gpu_{op}"]["throughput"]
                             / run["methods"][f"ours_{op}"]["throughput"]} for op in workloads}
            report["runs"][str(threads)] = run
    finally:
        tmp.cleanup()
    report["machine"]["loadavg_end"] = _loadavg()

    if not emit_report(report, args.out, args.json):
        for threads, run in report["runs"].items():
            print(f"threads={threads}")
            for name, m in run["methods"].items():
                print(f"  {name:18s} {m['median_s'] * 1e3:9.2f} ms   {m['throughput']:14,.0f} {m['unit']}")
            for op, ratio in run.get("ratios", {}).items():
                tgt = TARGETS.get(op)
                print(f"  ours/DGL {op:12s} {ratio:6.2f}x" + (f"  (target {tgt}x: {'met' if ratio >= tgt else 'NOT met'})" if tgt else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
