"""``pinclip datasets NAME --out DIR ...``: build a real dataset in the toolkit's dataset format.

One subcommand per dataset (``DATASETS``: the module and its ``add_parser``), so more can be added.

``pinclip datasets unihan --out DIR [--max-pins N] [--image-size S] [--seed S]``: CJK characters
from Unicode's Unihan database as pins (glyph image rendered from a CJK font, English definition
as text) on radical, phonetic-series and meaning-keyword boards (``graph.unihan``). Needs the
Debian packages unicode-data and fonts-wqy-microhei (``make real-data-deps``). Written
atomically; the same arguments give byte-identical tables.
"""
from __future__ import annotations

import argparse
from pathlib import Path

UNIHAN_HELP = """Build the Unihan dataset: CJK characters as pins on radical, phonetic-series and
meaning boards (see graph/unihan.py for the rules).

Pins: the characters with a kFrequency value (about 5,000), most frequent first; --max-pins N
keeps the first N of them (beyond those: characters with a kDefinition, by code point). Text:
the English kDefinition; image: the glyph, black on white. Boards: radical:R (kRSUnicode),
phonetic:S (kPhonetic), meaning:WORD (content words shared by >= 3 definitions); boards of
fewer than 3 pins and pins on no board are dropped. 10% of the pins are flagged fresh
(cold-start pins of `pinclip build-graph`), drawn from --seed.

Needs: sudo apt-get install unicode-data fonts-wqy-microhei   (or: make real-data-deps)
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from training.commands.synth import add_fresh_fraction_argument
    p = subparsers.add_parser("datasets", help="build a real dataset (unihan) in the dataset format",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="dataset", title="datasets")
    sub.required = True

    u = sub.add_parser("unihan", help="CJK characters from Unihan: glyph images, definitions, "
                       "radical / phonetic / meaning boards", description=UNIHAN_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    u.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="dataset directory (created, or a previous Unihan dataset replaced)")
    u.add_argument("--max-pins", type=int, default=None, metavar="N",
                   help="at most N characters, most frequent first (default: every character "
                        "with a kFrequency, about 5,000)")
    u.add_argument("--image-size", type=int, default=64, metavar="S",
                   help="side of the square glyph images in pixels (>= 16; default 64)")
    u.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of the draw of the fresh pins (>= 0; default 0)")
    add_fresh_fraction_argument(u)
    u.add_argument("--unihan-dir", type=Path, default=None, metavar="DIR",
                   help="directory of the Unihan_*.txt[.bz2] files (default: /usr/share/unicode)")
    u.add_argument("--font", type=Path, default=None, metavar="FILE",
                   help="CJK font file, .ttf/.ttc/.otf (default: WenQuanYi Micro Hei or Noto CJK)")
    u.add_argument("--quiet", action="store_true", help="no progress bar")
    u.set_defaults(func=run_unihan)


def run_unihan(args: argparse.Namespace) -> int:
    from graph.unihan import build_unihan_dataset

    s = build_unihan_dataset(args.out, max_pins=args.max_pins, image_size=args.image_size,
                             seed=args.seed, fresh_fraction=args.fresh_fraction,
                             unihan_dir=args.unihan_dir, font=args.font, progress=not args.quiet)
    kinds = ", ".join(f"{k} {n:,}" for k, n in s.boards_per_kind.items())
    print(f"wrote {s.out_dir} in {s.seconds:.1f} s")
    print(f"  pins {s.num_pins:,} (fresh {s.num_fresh:,})  boards {s.num_boards:,} ({kinds})")
    print(f"  edges {s.num_edges:,} ({s.num_edges / max(1, s.num_pins):.2f} boards per pin); images "
          f"{args.image_size}x{args.image_size} PNG under images/")
    return 0
