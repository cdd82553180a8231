"""``pinclip neighbors RUN_DIR [RUN_DIR ...] --pin ID [-k K] [--html OUT.html] [--json]``: one pin's
graph neighborhood beside its nearest neighbors in each run's embedding.

For the pin ``--pin`` (the dataset's pin id): its PinSage top-T importance neighbors with visit
counts (the ``pinsage_default`` sampler config, seeded by ``--seed``, on the training graph:
held-out and cold-start edges excluded), then for each RUN_DIR its ``-k`` nearest pins by cosine
similarity of the fused embedding (RUN_DIR/embeddings, made or re-used as ``pinclip evaluate``
does; a baseline directory of ``pinclip demo`` works too). Marks: B = a board mate of the query
(shares a board with it, all edges), C = a cold-start pin. Every RUN_DIR must use the same graph
store. ``--json`` prints the result as JSON; ``--html OUT.html`` also writes one self-contained
page (images inline) with the same galleries, replacing OUT.html only when it is an HTML page.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("neighbors", help="one pin's graph neighborhood beside its nearest neighbors per run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--pin", required=True, metavar="ID", help="the query pin: a pin id of the dataset")
    p.add_argument("-k", type=int, default=10, help="neighbors per run and in the graph neighborhood (default 10)")
    p.add_argument("--html", type=Path, metavar="OUT.html", help="also write a self-contained HTML gallery page")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of tables")
    p.add_argument("--seed", type=int, default=0, help="seed of the graph neighborhood's walks (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (for embedding the pins)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from training.neighbors import (check_html_output, format_neighborhoods, neighbors_html, pin_neighborhoods,
                                    write_html)

    log = (lambda *a, **k: print(*a, file=sys.stderr, **k))
    if args.html is not None:
        check_html_output(args.html)      # refused before anything is embedded
    res = pin_neighborhoods(args.run_dirs, args.pin, args.k, seed=args.seed, device=args.device,
                            progress=not args.quiet, log=log)
    if args.html is not None:
        write_html(args.html, neighbors_html(res))
        log(f"wrote {args.html}")
    print(json.dumps(res, indent=2, default=str) if args.json else format_neighborhoods(res))
    return 0
