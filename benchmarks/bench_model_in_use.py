"""A trained model in use: encode throughput of ``pinclip.load`` and search latency over 1M vectors.

    python benchmarks/bench_model_in_use.py --model MODEL_DIR --json     # an exported model (pinclip export)
    python benchmarks/bench_model_in_use.py --run demo_out/runs/pinclip  # exports the run to --work-dir first
    python benchmarks/bench_model_in_use.py --model M --pins 512 --n 100000 --no-ivfpq

Encode (``PinEncoder.encode_image`` / ``encode_text`` / ``encode_pins``, batch ``--batch-size``):
the first ``--pins`` pins of ``--dataset`` (default: a synthetic world written by ``graph.synth``
into ``--work-dir``, 64 px images like the demo's), images given as paths, so decoding is
included. Each is timed ``--repeats`` times after one untimed warm-up; medians and every sample
are reported as items per second.

Search: ``--n`` clustered unit vectors of the model's width (``bench_ann.clustered_vectors``,
the distribution documented there) in a faiss flat index and an IVF-PQ index with the defaults of
``training.ann.default_ivfpq_params``; a query is one text through ``encode_text`` followed by
``ANNIndex.search(k=10)`` on one faiss thread: the latency a user of ``pinclip search`` sees
once the model and index are loaded. Medians and p99 over ``--queries`` queries, split into the
encode and the search part.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench_common import cpu_model, emit_report  # noqa: E402


def _machine() -> dict:
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "os": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average_at_start": os.getloadavg()}


def _pins(dataset: Path, n: int) -> tuple[list, list]:
    """Image paths (None when missing) and texts of the first ``n`` pins of a dataset directory."""
    import pyarrow.parquet as pq
    import pyarrow.csv as pcsv

    path = dataset / "pins.parquet"
    table = pq.read_table(path) if path.is_file() else pcsv.read_csv(dataset / "pins.csv")
    table = table.slice(0, n)
    images = [None if p is None else str(dataset / p) for p in table.column("image").to_pylist()]
    texts = table.column("text").to_pylist()
    return images, texts


def _rate(fn, items: int, repeats: int) -> dict:
    fn()  # warm-up: allocator, thread pools, first-call paths
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        samples.append(items / (time.perf_counter() - t))
    return {"per_s": statistics.median(samples), "samples": [round(s, 1) for s in samples]}


def encode_throughput(encoder, images: list, texts: list, batch_size: int, repeats: int) -> dict:
    have = [p for p in images if p is not None]
    return {
        "images_per_s": _rate(lambda: encoder.encode_image(have, batch_size=batch_size), len(have), repeats),
        "texts_per_s": _rate(lambda: encoder.encode_text([t or "" for t in texts], batch_size=batch_size),
                             len(texts), repeats),
        "pins_per_s": _rate(lambda: encoder.encode_pins(images=images, texts=texts, batch_size=batch_size),
                            len(images), repeats),
        "num_pins": len(images), "num_images": len(have), "batch_size": batch_size,
    }


def search_latency(encoder, n: int, queries: list[str], ivfpq: bool, seed: int) -> dict:
    import faiss
    from bench_ann import clustered_vectors
    from training.ann import build_index

    vectors, _ = clustered_vectors(n, encoder.embed_dim, clusters=2000, noise=1.0, seed=seed)
    out = {"num_vectors": n, "dim": encoder.embed_dim, "k": 10, "num_queries": len(queries), "indexes": {}}
    kinds = ["flat"] + (["ivfpq"] if ivfpq else [])
    for kind in kinds:
        t = time.perf_counter()
        ann = build_index(vectors, kind)
        build_s = time.perf_counter() - t
        faiss.omp_set_num_threads(1)
        enc, srch = [], []
        for q in queries:
            t0 = time.perf_counter()
            emb = encoder.encode_text([q]).numpy()
            t1 = time.perf_counter()
            ann.search(emb, 10)
            t2 = time.perf_counter()
            enc.append(1e3 * (t1 - t0))
            srch.append(1e3 * (t2 - t1))
        faiss.omp_set_num_threads(os.cpu_count() or 1)
        total = sorted(a + b for a, b in zip(enc, srch))
        out["indexes"][kind] = {
            "build_s": build_s, "params": ann.manifest.get("params", {}),
            "encode_ms_p50": statistics.median(enc), "search_ms_p50": statistics.median(srch),
            "total_ms_p50": statistics.median(total), "total_ms_p99": total[min(len(total) - 1, int(0.99 * len(total)))],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", type=Path, help="an exported model directory (pinclip export)")
    src.add_argument("--run", type=Path, help="a training run: exported into --work-dir first")
    ap.add_argument("--dataset", type=Path, default=None, help="pins to encode (default: a synthetic world)")
    ap.add_argument("--work-dir", type=Path, default=None, help="where the world and an export go (default: a temp dir)")
    ap.add_argument("--pins", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=1_000_000, help="vectors in the search index")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--no-ivfpq", action="store_true", help="only the exact flat index")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = ap.parse_args(argv)

    import pinclip

    tmp = tempfile.TemporaryDirectory(prefix="bench_model_in_use_")
    work = args.work_dir or Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = args.model
    if args.run is not None:
        from training.export import export_run
        model_dir = export_run(args.run, work / "model")
    dataset = args.dataset
    if dataset is None:
        from graph.synth import synthesize
        dataset = work / f"world_{args.pins}_{args.seed}"
        if not (dataset / "pins.parquet").is_file():
            synthesize(dataset, num_pins=args.pins, num_boards=max(10, args.pins // 10), seed=args.seed,
                       progress=False)
    encoder = pinclip.load(model_dir, device=args.device)
    images, texts = _pins(dataset, args.pins)
    report = {"benchmark": "model_in_use", "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": _machine(), "model": {"dir": str(model_dir), "embed_dim": encoder.embed_dim,
                                               "image_size": encoder.image_size,
                                               "name": getattr(encoder.config, "name", None)},
              "device": args.device, "dataset": str(dataset)}
    report["encode"] = encode_throughput(encoder, images, texts, args.batch_size, args.repeats)
    queries = [t for t in texts if t][:args.queries] or ["a red chair"] * args.queries
    report["search"] = search_latency(encoder, args.n, queries, not args.no_ivfpq, args.seed)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    tmp.cleanup()
    if not emit_report(report, args.out, args.json):
        e = report["encode"]
        print(f"encode ({args.device}, batch {e['batch_size']}): {e['images_per_s']['per_s']:.0f} images/s, "
              f"{e['texts_per_s']['per_s']:.0f} texts/s, {e['pins_per_s']['per_s']:.0f} pins/s")
        for kind, r in report["search"]["indexes"].items():
            print(f"search {kind} over {report['search']['num_vectors']:,} x {report['search']['dim']}: "
                  f"text query p50 {r['total_ms_p50']:.2f} ms (encode {r['encode_ms_p50']:.2f} + search "
                  f"{r['search_ms_p50']:.2f}), p99 {r['total_ms_p99']:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
