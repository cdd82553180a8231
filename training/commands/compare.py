"""``pinclip compare --dataset DATASET_DIR --out DIR``: PinCLIP against its baselines on any dataset.

The whole comparison of ``pinclip demo`` on a dataset directory in the standard format (pins,
boards, edges; see README "The dataset format"):

1. build the graph store with its train / val / test / cold-start split (``DIR/graph``;
   ``--cold-start-fraction F`` draws that share of pins as cold start, else the dataset's
   ``fresh`` column decides);
2. train PinCLIP (``training/configs/demo.yaml``) -> ``DIR/runs/pinclip``;
3. train CLIP-only (``clip_only.yaml``) -> ``DIR/runs/clip_only``;
4. the frozen pretrained text encoder (all-MiniLM-L6-v2) -> ``DIR/runs/frozen_text``, and the
   same with the images' raw pixels beside it (PCA-whitened, the text weight chosen on
   validation) -> ``DIR/runs/frozen_text_pixels``: the bar a trained image tower has to clear;
5. the graph-only GNN (PyG SAGEConv on the train graph) -> ``DIR/runs/graph_only``;
   with ``--vlm PATH`` (a local Qwen2-VL / Qwen3-VL checkpoint) also the frozen VLM's joint
   image-text embedding -> ``DIR/runs/frozen_vlm`` (the paper's "+20% over Qwen" comparison);
6. evaluate every method on the same splits; write ``DIR/report.md``, ``DIR/metrics.json``
   (method -> metric -> value), ``DIR/significance.json`` (bootstrap intervals over query pins
   and paired differences against PinCLIP), the plots and ``DIR/timings.json``.

``--seeds N`` trains every trained method N times (``runs/NAME`` for the first seed,
``runs/NAME-seed1``, ...: ``train.seed`` and ``sampler.seed`` plus i; the graph baseline's seed
plus i); metrics.json then holds the mean over seeds and significance.json the training
variance too. ``--set KEY=VALUE`` overrides the training config of both trained methods (e.g.
``--set model.name=...``; ``pinclip config show demo`` lists the keys).

A re-run reuses every finished step (an interrupted training run resumes from its checkpoint).
DIR/compare.json records the parameters: a DIR made with other parameters is refused with the
difference, and DIR is never replaced.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from training.compare import GRAPH_STEPS
    p = subparsers.add_parser("compare", help="compare PinCLIP with CLIP-only and the baselines on a dataset",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, type=Path, metavar="DATASET_DIR",
                   help="a dataset directory (pins, boards, edges tables)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seeds", type=int, default=1, help="training seeds of each trained method (default 1)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for both trained methods (repeatable), "
                        "e.g. --set train.batch_size=32")
    p.add_argument("--max-steps", type=int, default=None, help="training steps of each run (default: the config's)")
    p.add_argument("--graph-steps", type=int, default=GRAPH_STEPS,
                   help=f"training steps of the graph-only baseline (default {GRAPH_STEPS})")
    p.add_argument("--cold-start-fraction", type=float, default=None, metavar="F",
                   help="share of pins held out as cold start (default: the dataset's fresh column)")
    p.add_argument("--seed", type=int, default=0, help="the split seed (and the graph baseline's)")
    p.add_argument("--vlm", default=None, metavar="PATH",
                   help="a local Qwen2-VL / Qwen3-VL checkpoint: adds the frozen-VLM baseline (frozen_vlm)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.cli import CLIError
    from training.compare import print_summary, run_compare
    if not args.dataset.is_dir():
        raise CLIError(f"--dataset {args.dataset}: no such directory")
    out = args.out.absolute()
    rep = run_compare(args.dataset, out, seeds=args.seeds, overrides=args.overrides, max_steps=args.max_steps,
                      graph_steps=args.graph_steps, device=args.device, seed=args.seed,
                      cold_start_fraction=args.cold_start_fraction, vlm=args.vlm)
    print_summary(rep, out, "compare")
    return 0
