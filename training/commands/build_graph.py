"""``pinclip build-graph DATASET_DIR --out GRAPH_DIR``: build the graph store of a dataset.

Reads the ``pins``, ``boards`` and ``edges`` tables (``.parquet`` or ``.csv``) in batches, checks
them (errors name the file, the 0-based data row and the column), draws the splits and writes
the store atomically: on any error ``GRAPH_DIR`` is left as it was.

``--memory-budget 2GB`` builds out of core: edges are bucketed on disk and sorted group by
group so the process stays within about that much resident memory (pins and boards are still
held in memory); the store is byte-identical to the in-memory build's. Without the flag, edges
files of 1 GiB or more are built out of core with the default budget (1.5 GB).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("build-graph", help="build the graph store of a dataset directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset_dir", type=Path, metavar="DATASET_DIR", help="dataset directory (DESIGN.md format)")
    p.add_argument("--out", required=True, type=Path, metavar="GRAPH_DIR",
                   help="graph store directory (created, or an existing store replaced)")
    p.add_argument("--cold-start-fraction", type=float, default=None, metavar="F",
                   help="draw this share of pins as cold-start pins (default: the pins' 'fresh' "
                        "column when present, else 0.1)")
    p.add_argument("--val-fraction", type=float, default=0.05, metavar="F", help="held-out validation edges (default 0.05)")
    p.add_argument("--test-fraction", type=float, default=0.05, metavar="F", help="held-out test edges (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the splits (default 0)")
    p.add_argument("--memory-budget", default=None, metavar="BYTES",
                   help="build out of core within about this much resident memory: 2GB "
                        "(2 x 10^9 bytes), 1.5GiB (1.5 x 2^30) or a number of bytes (default: in "
                        "memory, or out of core within 1.5GB when the edges file is 1 GiB or larger)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph.dataset import build_graph_from_dataset
    from graph.external_build import parse_bytes
    from graph.stats import graph_stats

    if args.memory_budget is not None:
        try:
            parse_bytes(args.memory_budget)  # a bad value fails before any reading
        except ValueError as exc:
            raise ValueError(f"--memory-budget: {exc}") from None
    t0 = time.perf_counter()
    g = build_graph_from_dataset(args.dataset_dir, args.out, cold_start_fraction=args.cold_start_fraction,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 seed=args.seed, progress=not args.quiet,
                                 memory_budget=args.memory_budget)
    stats = graph_stats(g, components=False)
    source = g.manifest.get("source", {})
    counts = stats["splits"]["counts"]
    print(f"built {args.out} in {time.perf_counter() - t0:.1f} s")
    print(f"  pins {g.num_pins:,}  boards {g.num_boards:,}  edges {g.num_edges:,} "
          f"({source.get('duplicate_edges_merged', 0):,} duplicate edges merged)")
    print(f"  index dtype {stats['index_dtype']}, weights {'yes' if g.has_weights else 'no'}, "
          f"timestamps {'yes' if g.has_timestamps else 'no'}, isolated pins {stats['isolated_pins']:,}, "
          f"isolated boards {stats['isolated_boards']:,}")
    print(f"  splits: train {counts['train']:,} / val {counts['val']:,} / test {counts['test']:,} / "
          f"cold-start {counts['cold_start']:,} edges; {counts['cold_start_pins']:,} cold-start pins "
          f"({g.splits.params['cold_start_source']})")
    print(f"  {stats['bytes_on_disk']:,} bytes on disk ({stats['bytes_per_edge'] or 0:.1f} per edge)")
    return 0
