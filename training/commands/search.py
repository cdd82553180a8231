"""``pinclip search INDEX_DIR --model MODEL_DIR (--text T | --image PATH | --pin ID)``: nearest pins.

INDEX_DIR is a ``pinclip ann-index`` directory. The query is embedded with the model directory
(``pinclip export``): ``--text`` with its text tower, ``--image`` with its image tower;
``--pin ID`` takes that pin's own row of the embedding directory the index was built from (no
model needed). Image, text and fused embeddings share one space, so any query searches any index.
Prints the ``-k`` best pins: rank, the dataset's pin id, the score (inner product = cosine) and,
when the embedding directory's dataset or graph store can be read, the pin's text and image path.
``--json`` prints ``{"query": {...}, "results": [{"pin_id", "score", "text", "image"}, ...]}``.
Needs the optional extra ``faiss``. Python: ``training.search.search``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="query a faiss index of pins by text, image or pin",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", type=Path, metavar="INDEX_DIR", help="index directory written by pinclip ann-index")
    p.add_argument("--model", type=Path, default=None, metavar="MODEL_DIR",
                   help="model directory written by pinclip export (needed for --text and --image)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", default=None, metavar="T", help="a caption to search with")
    q.add_argument("--image", type=Path, default=None, metavar="PATH", help="an image file to search with")
    q.add_argument("--pin", default=None, metavar="ID", help="an indexed pin's dataset id: its neighbors")
    p.add_argument("-k", type=int, default=10, help="results (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, cuda:N (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (no Hugging Face loading bars)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from training.cli import CLIError
    from training.search import format_results, search

    if args.k < 1:
        raise CLIError(f"-k {args.k}: must be >= 1")
    if args.pin is None and args.model is None:
        raise CLIError("--text and --image need --model MODEL_DIR (a pinclip export directory) to embed the query")
    out = search(args.index_dir, args.model if args.pin is None else None, text=args.text, image=args.image,
                 pin=args.pin, k=args.k, device=args.device)
    print(json.dumps(out, indent=2) if args.json else format_results(out))
    return 0
