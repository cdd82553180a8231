"""``pinclip synth --out DIR --pins N --boards M --seed S``: write the synthetic Pin-Board world.

The world (``graph.synth``) has 12 topics (an object shape and palette in the image, synonyms in
the caption) and 8 latent styles (the image background, never named in any text). Boards have
one style and 1-3 topics; pins are saved only to boards of their style holding their topic. The
directory holds the dataset tables (``pins``, ``boards``, ``edges`` .parquet, ``images/``) that
``pinclip build-graph`` reads, plus the ground truth for evaluation (``truth_pins.parquet``,
``truth_boards.parquet``, ``synth.json``). It is written atomically: on any error ``DIR`` is left
as it was. The same arguments give byte-identical files, whatever ``--workers``.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_fresh_fraction_argument(p: argparse.ArgumentParser) -> None:
    """``--fresh-fraction F``: the share of pins a dataset writer flags fresh (cold-start pins)."""
    p.add_argument("--fresh-fraction", type=float, default=0.1, metavar="F",
                   help="share of pins flagged fresh, i.e. cold-start pins (in [0, 1); default 0.1)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("synth", help="write the synthetic Pin-Board world (the default dataset)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="dataset directory (created, or an existing one replaced)")
    p.add_argument("--pins", required=True, type=int, metavar="N", help="number of pins (>= 1)")
    p.add_argument("--boards", required=True, type=int, metavar="M", help="number of boards (1..N)")
    p.add_argument("--seed", required=True, type=int, metavar="S", help="random seed (>= 0)")
    p.add_argument("--image-size", type=int, default=64, metavar="PX",
                   help="side of the square RGB images in pixels (>= 16; default 64)")
    p.add_argument("--no-images", action="store_true", help="render no images (image column null)")
    add_fresh_fraction_argument(p)
    p.add_argument("--workers", type=int, default=None, metavar="K",
                   help="image rendering processes (default: the usable CPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph.synth import synthesize

    s = synthesize(args.out, num_pins=args.pins, num_boards=args.boards, seed=args.seed,
                   image_size=args.image_size, images=not args.no_images,
                   fresh_fraction=args.fresh_fraction, workers=args.workers, progress=not args.quiet)
    print(f"wrote {s.out_dir} in {s.seconds:.1f} s")
    print(f"  pins {s.num_pins:,}  boards {s.num_boards:,}  edges {s.num_edges:,} "
          f"({s.num_edges / s.num_pins:.2f} per pin)")
    print(f"  {s.num_topics} topics, {s.num_styles} latent styles; images "
          f"{'none' if args.no_images else f'{args.image_size}x{args.image_size} PNG'}; "
          f"ground truth in truth_pins.parquet, truth_boards.parquet, synth.json")
    return 0
