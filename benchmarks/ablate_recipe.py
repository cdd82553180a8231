"""Ablation of the PinCLIP recipe that keeps what the pretrained towers know (issue 16, item 4).

The shipped demo recipe (``training/configs/demo.yaml`` on ``pinclip-tiny-demo``) combines three
changes against the first version's recipe; this script trains the full recipe, the recipe with
each change undone (one at a time), the recipe plus a slow text projection (a fourth change that
was measured and left out: no gain on either dataset) and the first version's recipe (all undone),
all on the same graph store with the same seed, adds the frozen text encoder, evaluates every
directory on the same splits and writes the paired bootstrap intervals of "full vs X"
(``training.evaluation.significance.write_significance``, reference ``full``):

==============  ===========================================================================
variant         overrides on top of the shipped demo config
==============  ===========================================================================
full            none
no_width        ``embed_dim=128`` (Matryoshka 32/64/128): the 384-d text signal squeezed
no_preserve     ``projection_init=random``: projections at PyTorch's default init
no_residual     ``fusion.zero_init_early=false``: early fusion starts as random noise
lr_scale        ``optim.lr_scale.text_proj=0.1``: the text projection at a tenth of the lr
v1              all three undone: the first version's recipe
text_lora       ``text.lora.rank=8``: LoRA adapters on the text tower (not shipped; measured)
conv_stem       ``vision.stem=conv``: the hybrid ViT's convolutional stem (measured)
vis_lr3         ``optim.lr_scale.visual=3.0``: the image tower at 3x the learning rate (measured)
vis_lr03        ``optim.lr_scale.visual=0.3``: the image tower at 0.3x the learning rate (measured)
grid4           ``vision.readout_grid=4``: class token plus a 4 x 4 grid of patch tokens (measured)
grid4_batch_    ``grid4`` and ``image_norm=batch``: the image projection's input centered over
norm            the batch, which removes what every image shares (measured)
image_image     ``loss.neighbor_image_image_weight=0.5``: a seed's image against its neighbors'
                images (measured)
see_images      all three (measured; not shipped: no headline gain, see RESULTS.md)
no_aug          ``data.augment=false``: no random crops, flips or color jitter (measured)
see_images_no_  ``see_images`` and ``no_aug`` (measured; not shipped: the best headline on
aug             Unihan, but text->image recall falls below CLIP-only's on the synthetic world)
no_neighbor_    ``loss.neighbor_image_weight=0``: no term pulls a seed toward its neighbors' image
image           embeddings; the image head learns from the image-text loss (and, through the
                fusion, from the fused terms) only (measured)
frozen_text     the frozen all-MiniLM-L6-v2 on pin text (a baseline, not trained)
==============  ===========================================================================

Every variant's headline is its best trained head on the validation split (the evaluation's
fair-head rule), so "no_residual" is not penalized for a fused head it could replace by its
text head.

    python benchmarks/ablate_recipe.py --dataset /data/unihan --work-dir /tmp/ablate_unihan --json
    python benchmarks/ablate_recipe.py --dataset /data/world --work-dir /tmp/ablate_synth --variants full v1

Re-runs reuse finished runs (``train_or_resume``) and evaluations; ``--steps`` changes every
variant's ``train.max_steps`` (default: the config's).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from bench_common import cpu_model, emit_report  # noqa: E402

_M = "model.overrides."
VARIANTS: dict[str, list[str]] = {
    "full": [],
    "no_width": [f"{_M}embed_dim=128", f"{_M}matryoshka_dims=[32,64,128]"],
    "no_preserve": [f"{_M}projection_init=random"],
    "no_residual": [f"{_M}fusion.zero_init_early=false"],
    "lr_scale": ["optim.lr_scale.text_proj=0.1"],
    "v1": [f"{_M}embed_dim=128", f"{_M}matryoshka_dims=[32,64,128]", f"{_M}projection_init=random",
           f"{_M}fusion.zero_init_early=false"],
    # Not part of the shipped recipe: the text tower adapted by LoRA (rank 8 on every linear layer of
    # its blocks; the adapters start at zero, so the tower starts exactly as the frozen encoder).
    "text_lora": [f"{_M}text.lora.rank=8"],
    # Not part of the shipped recipe: the hybrid ViT's convolutional stem instead of patchify.
    "conv_stem": [f"{_M}vision.stem=conv"],
    "grid4": [f"{_M}vision.readout_grid=4"],
    "image_image": ["loss.neighbor_image_image_weight=0.5"],
    "grid4_batch_norm": [f"{_M}vision.readout_grid=4", f"{_M}image_norm=batch"],
    "see_images": [f"{_M}vision.readout_grid=4", f"{_M}image_norm=batch", "loss.neighbor_image_image_weight=0.5"],
    "no_aug": ["data.augment=false"],
    "no_neighbor_image": ["loss.neighbor_image_weight=0"],
    "see_images_no_aug": [f"{_M}vision.readout_grid=4", f"{_M}image_norm=batch", "loss.neighbor_image_image_weight=0.5",
                          "data.augment=false"],
    # Not part of the shipped recipe: the image tower at 3x and 0.3x the learning rate.
    "vis_lr3": ["optim.lr_scale.visual=3.0"],
    "vis_lr03": ["optim.lr_scale.visual=0.3"],
}
METRICS = ("board_recall@10", "cold_start_board_recall@10", "board_mrr", "t2i_recall@10")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", type=Path, required=True, help="a dataset directory (the standard format)")
    ap.add_argument("--work-dir", type=Path, required=True, help="graph store, runs and significance.json go here")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps of every variant (default: the config's)")
    ap.add_argument("--seed", type=int, default=0, help="graph split seed")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="extra training override for every variant (repeatable)")
    ap.add_argument("--json", action="store_true", help="print the JSON report")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report to this file")
    args = ap.parse_args(argv)

    from graph.dataset import build_graph_from_dataset
    from training.compare import BaselineOptions, build_baseline
    from training.evaluation.run_eval import load_evaluation
    from training.evaluation.significance import write_significance
    from training.trainer import train_or_resume

    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    graph_dir, cache, runs = work / "graph", work / "cache", work / "runs"
    if not (graph_dir / "manifest.json").is_file():
        build_graph_from_dataset(args.dataset, graph_dir, seed=args.seed)
    seconds: dict[str, float] = {}
    dirs: dict[str, list[Path]] = {}
    for name in args.variants:
        t0 = time.perf_counter()
        over = [f"data.graph={graph_dir}", f"data.cache_dir={cache}", *VARIANTS[name], *args.overrides]
        if args.steps is not None:
            over.append(f"train.max_steps={args.steps}")
        print(f"[{name}] {' '.join(VARIANTS[name]) or '(the shipped recipe)'}", flush=True)
        if not train_or_resume("demo", runs / name, over, log=lambda msg: print(f"    {msg}", flush=True)):
            raise SystemExit(f"training {name} did not finish (see {runs / name / 'train.log'})")
        seconds[name] = time.perf_counter() - t0
        dirs[name] = [runs / name]
    if not (runs / "frozen_text" / "method.json").is_file():
        build_baseline("frozen-text", graph_dir, runs / "frozen_text", BaselineOptions())
    dirs["frozen_text"] = [runs / "frozen_text"]

    evals = {name: load_evaluation(d[0], log=lambda *a, **k: None) for name, d in dirs.items()}
    sig = write_significance(work, dirs, reference=next(iter(dirs)))
    rows = {name: {"headline_head": e.get("headline_head"),
                   **{m: e["metrics"].get(m) for m in METRICS},
                   "heads": {h: {k: v.get(k) for k in ("board_recall@10", "cold_start_board_recall@10")}
                             for h, v in (e.get("heads") or {}).items()}} for name, e in evals.items()}
    report = {"benchmark": "ablate_recipe", "dataset": str(args.dataset.absolute()), "work_dir": str(work),
              "variants": {n: VARIANTS[n] for n in args.variants}, "results": rows,
              "paired": sig["paired"], "intervals": sig["methods"], "confidence": sig["confidence"],
              "resamples": sig["resamples"], "train_seconds": seconds,
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__, "threads": torch.get_num_threads()}}
    if not emit_report(report, args.out, args.json):
        ref = next(iter(dirs))
        print(f"\n{'variant':<13} {'head':<6} " + " ".join(f"{m:>28}" for m in METRICS[:2]))
        for name, r in rows.items():
            cells = []
            for m in METRICS[:2]:
                p = sig["paired"].get(f"{ref} vs {name}", {}).get(m)
                ci = f" ({-p['interval'][1]:+.3f},{-p['interval'][0]:+.3f})" if p else ""
                cells.append(f"{(r[m] if r[m] is not None else float('nan')):.3f}{ci}".rjust(28))
            print(f"{name:<13} {str(r['headline_head']):<6} " + " ".join(cells))
        print(f"(in brackets: the 95% paired interval of variant - {ref}; significance.json in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
