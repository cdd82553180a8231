"""``pinclip graph-stats GRAPH_DIR [--json]``: statistics of a graph store.

Counts, index dtype, pin-degree and board-size distributions, isolated nodes, connected
components, splits and bytes on disk; ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("graph-stats", help="print statistics of a graph store",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("graph_dir", type=Path, metavar="GRAPH_DIR", help="graph store directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    p.add_argument("--verify", choices=("fast", "full", "none"), default="fast",
                   help="checks on open: sizes, CRC32 of sampled blocks and the CSR structure (fast, "
                        "default), CRC32 of every byte and the structure (full), sizes and headers only "
                        "(none; the structure is still checked before components are counted)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph import PinBoardGraph
    from graph.stats import format_stats, graph_stats

    g = PinBoardGraph.open(args.graph_dir, verify=args.verify)
    stats = graph_stats(g)
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    return 0
