"""Forward+backward throughput of PinCLIP model configs.

One step = model forward on a batch of random images and captions, the configured image-text loss
(+ Matryoshka prefixes), backward, and an AdamW step. A frozen text tower is run once up front and
its token features are cached (fp16), as training does on a CPU; a trainable one runs every step.
Reported per config: median step time, samples per second, and the forward / backward split.

    python benchmarks/bench_model.py --json
    python benchmarks/bench_model.py --configs pinclip-tiny-demo --batch-size 128 --steps 10
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_common import emit_report  # noqa: E402

from pinclip.factory import create_model, get_tokenizer  # noqa: E402
from pinclip.losses import PinCLIPLoss  # noqa: E402
from pinclip.model import autocast  # noqa: E402

DEFAULT_BATCH = {"pinclip-tiny-demo": 128, "pinclip-tiny-scratch-text": 128, "pinclip-vit-b16-minilm": 8}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def bench_config(name: str, batch_size: int, steps: int, warmup: int, device: torch.device,
                 precision: str, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model = create_model(name, device=device).train()
    build_s = time.perf_counter() - t0
    cfg = model.config
    tokenizer = get_tokenizer(model)
    captions = [f"pin {i}: a photo of a cozy room with plants and a lamp" for i in range(batch_size)]
    enc = {k: v.to(device) for k, v in tokenizer(captions).items()}
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, 3, model.image_size, model.image_size, generator=g).to(device)
    text_cached = bool(model.text.frozen)
    text_cache_s = None
    if text_cached:
        t0 = time.perf_counter()
        cache = model.text_features(enc["input_ids"], enc["attention_mask"])
        _sync(device)
        text_cache_s = time.perf_counter() - t0
        text_inputs = {"text_features": cache["tokens"], "text_mask": cache["mask"]}
    else:
        text_inputs = enc
    loss_fn = PinCLIPLoss.from_config(cfg)
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4)
    fwd, bwd, total = [], [], []
    for step in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device.type, precision):
            out = model(images, **text_inputs)
            loss = loss_fn(out)["loss"]
        _sync(device)
        t1 = time.perf_counter()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        t2 = time.perf_counter()
        if step >= warmup:
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
            total.append(t2 - t0)
    step_s = statistics.median(total)
    return {
        "config": name, "device": str(device), "precision": precision, "batch_size": batch_size,
        "image_size": model.image_size, "steps": steps,
        "text": "cached features (frozen tower)" if text_cached else "tower in the step",
        "step_s_median": round(step_s, 4), "step_s_min": round(min(total), 4),
        "forward_s_median": round(statistics.median(fwd), 4),
        "backward_optim_s_median": round(statistics.median(bwd), 4),
        "samples_per_s": round(batch_size / step_s, 1),
        "text_cache_s": None if text_cache_s is None else round(text_cache_s, 4),
        "build_s": round(build_s, 2),
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_trainable": sum(p.numel() for p in model.trainable_parameters()),
        "loss": round(loss.item(), 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=["pinclip-tiny-demo", "pinclip-vit-b16-minilm"])
    p.add_argument("--batch-size", type=int, default=None, help="default: 128 for tiny configs, 8 for ViT-B/16")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    p.add_argument("--out", type=Path, help="also write the JSON report to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    load_before = os.getloadavg()[0]
    results = []
    for name in args.configs:
        batch = args.batch_size or DEFAULT_BATCH.get(name, 32)
        r = bench_config(name, batch, args.steps, args.warmup, device, args.precision)
        results.append(r)
        if not args.json:
            print(f"{name:28s} batch {batch:4d}  step {r['step_s_median']:.3f} s  "
                  f"(fwd {r['forward_s_median']:.3f} + bwd/opt {r['backward_optim_s_median']:.3f})  "
                  f"{r['samples_per_s']:8.1f} samples/s  text: {r['text']}")
    emit_report({"benchmark": "bench_model", "torch": torch.__version__, "threads": args.threads,
                 "machine": platform.machine(), "cpu_count": os.cpu_count(),
                 # Why: the CPU may be shared; a 1-minute load above the thread count
                 # means the timings include waiting for other processes.
                 "loadavg_1min_before": round(load_before, 2),
                 "loadavg_1min_after": round(os.getloadavg()[0], 2),
                 "results": results}, args.out, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
