"""``pinclip demo --out DIR``: the main job on the embedded default (the synthetic world).

Today it synthesizes the Pin-Board world, builds the graph store with its cold-start split and
prints the graph statistics. Training and evaluation steps are added by later milestones.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_PINS = 3000
DEFAULT_BOARDS = 300


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the end-to-end demo on the synthetic world",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--pins", type=int, default=DEFAULT_PINS)
    p.add_argument("--boards", type=int, default=DEFAULT_BOARDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph.dataset import build_graph_from_dataset
    from graph.stats import format_stats, graph_stats
    from graph.synth import synthesize

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    print(f"[1/3] synthesizing the Pin-Board world ({args.pins} pins, {args.boards} boards, seed {args.seed})")
    synthesize(out / "world", num_pins=args.pins, num_boards=args.boards, seed=args.seed,
               image_size=args.image_size)
    print(f"[2/3] building the graph store -> {out / 'graph'}")
    g = build_graph_from_dataset(out / "world", out / "graph", seed=args.seed)
    print("[3/3] graph statistics")
    stats = graph_stats(g)
    (out / "graph_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(format_stats(stats))
    print(f"demo finished in {time.perf_counter() - t0:.1f} s; outputs in {out}")
    return 0
