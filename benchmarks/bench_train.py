"""Training throughput on the demo config and the share of step time spent waiting for data.

Synthesizes the default world (3000 pins, 300 boards; or takes ``--dataset``), then trains the
demo config (``training/configs/demo.yaml``) for ``--steps`` steps once per ``--workers`` value
and reads the per-step timings the trainer logs (``metrics.jsonl`` with ``train.log_every=1``).
The first ``--warmup`` steps (worker start-up, first prefetch, allocator warm-up) are left out.

Reported per worker count: seed pins per second, seconds per step, data wait per step (time
blocked on the loader, host-to-device copy included), compute per step, the data-wait share
``wait / (wait + compute)`` (target: below 10% with workers) and the worker-side seconds spent
sampling and fetching features per batch. The text feature cache is built once before timing.

Devices (``--device``): ``auto`` (default) trains on the CPU and, when CUDA is available, on the
GPU too (``train.device=cuda``; the config's ``model.precision: auto`` then means bf16 autocast),
with the same worker counts, and reports both in ``results`` (each entry has ``device``) and
``side_by_side`` (samples/s per worker count, GPU / CPU speed-up). Without CUDA the report says
``"cuda": "not available"``. ``cpu`` / ``cuda``: that device only. Sampling stays in the CPU
workers either way (``sampler.device`` is the config's). On CUDA each result also has
``peak_gpu_memory_gb`` (``torch.cuda.max_memory_allocated`` over the run).

    python benchmarks/bench_train.py --json
    python benchmarks/bench_train.py --workers 0 2 --steps 40 --dataset /data/world
    python benchmarks/bench_train.py --json --device auto --workers 2 4     # CPU and GPU side by side
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_common import emit_report  # noqa: E402

TARGET_WAIT_SHARE = 0.10


def run_once(config: str, dataset: Path, cache_dir: Path, workdir: Path, workers: int, steps: int, warmup: int,
             overrides: list[str], device: str = "cpu") -> dict:
    from training.config import load_train_config
    from training.logging_utils import read_jsonl
    from training.trainer import Trainer

    run_dir = workdir / f"run_{device}_w{workers}"
    cfg = load_train_config(config, [f"data.dataset={dataset}", f"data.cache_dir={cache_dir}",
                                     f"data.num_workers={workers}", f"train.max_steps={steps}",
                                     "train.log_every=1", f"train.checkpoint_every={steps}", "train.progress=false",
                                     "train.tensorboard=false", "eval.at_end=false", f"train.device={device}",
                                     *overrides])
    t0 = time.perf_counter()
    trainer = Trainer(cfg, run_dir)
    setup_s = time.perf_counter() - t0
    if trainer.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(trainer.device)
    t0 = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - t0
    peak_gb = (torch.cuda.max_memory_allocated(trainer.device) / 2**30 if trainer.device.type == "cuda" else None)
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r["step"] > warmup]
    wait = sum(r["data_wait_s"] for r in rows)
    compute = sum(r["compute_s"] for r in rows)
    seeds = cfg.train.batch_size
    precision = cfg.model.precision
    if precision == "auto":  # as pinclip.model.autocast resolves it
        precision = "bf16" if trainer.device.type == "cuda" else "fp32"
    return {
        "device": str(trainer.device),
        "precision": precision,
        "num_workers": workers,
        "timed_steps": len(rows),
        "samples_per_s": seeds * len(rows) / (wait + compute),
        "step_s": (wait + compute) / len(rows),
        "data_wait_s": wait / len(rows),
        "compute_s": compute / len(rows),
        "data_wait_share": wait / (wait + compute),
        "median_step_s": statistics.median(r["data_wait_s"] + r["compute_s"] for r in rows),
        "worker_sample_s": statistics.mean(r["worker_sample_s"] for r in rows),
        "worker_fetch_s": statistics.mean(r["worker_fetch_s"] for r in rows),
        "rows_per_step": statistics.mean(r["rows_per_step"] for r in rows),
        "setup_s": setup_s,
        "train_s_all_steps": train_s,
        "peak_gpu_memory_gb": peak_gb,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="demo", help="training config (file or shipped name; default demo)")
    ap.add_argument("--dataset", type=Path, default=None, help="dataset dir (default: synthesize the world)")
    ap.add_argument("--pins", type=int, default=3000)
    ap.add_argument("--boards", type=int, default=300)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the main process")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="auto: CPU, plus CUDA side by side when available; cpu / cuda: that device only")
    ap.add_argument("--work-dir", "--workdir", dest="workdir", type=Path, default=None,
                    help="where the world, runs and caches go (default: a temp dir, removed at the end)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    ap.add_argument("overrides", nargs="*", help="extra config overrides key=value")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda_ok = torch.cuda.is_available()
    if args.device == "cuda" and not cuda_ok:
        ap.error("--device cuda: CUDA is not available on this machine (use auto or cpu)")
    devices = (["cpu"] if args.device in ("auto", "cpu") else []) + \
        (["cuda"] if args.device == "cuda" or (args.device == "auto" and cuda_ok) else [])

    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        dataset = args.dataset
        synth_s = None
        if dataset is None:
            from graph.synth import synthesize
            dataset = workdir / "world"
            t0 = time.perf_counter()
            synthesize(dataset, num_pins=args.pins, num_boards=args.boards, seed=0, progress=False)
            synth_s = time.perf_counter() - t0
        cache = workdir / "cache"
        results = []
        for dev, w in [(dev, w) for dev in devices for w in args.workers]:
            results.append(run_once(args.config, dataset, cache, workdir, w, args.steps, args.warmup, args.overrides,
                                    dev))
            if not args.json:
                r = results[-1]
                print(f"{dev} workers={w}: {r['samples_per_s']:.1f} samples/s, {r['step_s']:.3f} s/step, data wait "
                      f"{100 * r['data_wait_share']:.1f}% ({r['data_wait_s'] * 1000:.0f} ms/step; worker sampling "
                      f"{r['worker_sample_s'] * 1000:.0f} ms + fetch {r['worker_fetch_s'] * 1000:.0f} ms per batch)")
    with_workers = [r for r in results if r["num_workers"] > 0]
    side_by_side = None
    if len(devices) == 2:
        side_by_side = {}
        for w in args.workers:
            cpu = next(r for r in results if r["num_workers"] == w and r["device"].startswith("cpu"))
            gpu = next(r for r in results if r["num_workers"] == w and r["device"].startswith("cuda"))
            side_by_side[str(w)] = {"cpu_samples_per_s": cpu["samples_per_s"], "cuda_samples_per_s": gpu["samples_per_s"],
                                    "cuda_over_cpu": gpu["samples_per_s"] / cpu["samples_per_s"],
                                    "cpu_data_wait_share": cpu["data_wait_share"],
                                    "cuda_data_wait_share": gpu["data_wait_share"]}
    out = {
        "benchmark": "bench_train",
        "config": args.config,
        "dataset": str(args.dataset) if args.dataset else f"synth {args.pins} pins / {args.boards} boards",
        "synth_s": synth_s,
        "steps": args.steps,
        "warmup_steps_excluded": args.warmup,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "device": args.device,
        "devices": devices,
        "cuda": torch.cuda.get_device_name(0) if cuda_ok else "not available",
        "results": results,
        "side_by_side": side_by_side,
        "target_data_wait_share": TARGET_WAIT_SHARE,
        "meets_target_with_workers": bool(with_workers) and all(r["data_wait_share"] < TARGET_WAIT_SHARE
                                                                 for r in with_workers),
    }
    emit_report(out, args.out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
