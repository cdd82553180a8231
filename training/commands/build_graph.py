"""``pinclip build-graph DATASET_DIR --out GRAPH_DIR``: build the graph store of a dataset.

Reads the ``pins``, ``boards`` and ``edges`` tables (``.parquet`` or ``.csv``) in batches, checks
them (errors name the file, the 0-based data row and the column), draws the splits and writes
the store atomically: on any error ``GRAPH_DIR`` is left as it was.

``--memory-budget 2GB`` builds out of core: edges are bucketed on disk and sorted group by
group so the process stays within about that much resident memory (pins and boards are still
held in memory); the store is byte-identical to the in-memory build's. Without the flag, edges
files of 1 GiB or more are built out of core with the default budget (1.5 GB).

Image paths must be relative and stay inside DATASET_DIR (symlinks resolved); the build rejects
any other, naming the row. ``--check-images`` also opens the header of every image once before
building (no pixels are decoded) and reports every missing, unreadable, non-regular (a FIFO, a
device, a directory) or oversized (over ``--max-image-pixels``, width x height) image together:
their count and the first 20 with row, pin id and path; any bad image exits with status 2 and
nothing is written. Without the flag images are not opened (the build's speed does not change),
and training meets a bad image only when it reads it (``data.on_bad_image``).
"""
from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

# = pinclip.transforms.DEFAULT_MAX_IMAGE_PIXELS (not imported here: building the CLI parser
# stays free of torch and Pillow; a test checks they agree).
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
# Bad images listed one by one in the --check-images report; the rest are counted.
SHOWN_BAD_IMAGES = 20
_REASON_WORDS = {"outside": "outside the dataset directory", "missing": "missing",
                 "not_regular": "not a regular file", "unreadable": "unreadable", "too_large": "too large"}


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
    p.add_argument("--check-images", action="store_true",
                   help="before building, open every image's header once and report every missing, "
                        "unreadable, non-regular or oversized image (exit 2 if any)")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                   help="with --check-images: the most pixels (width x height) an image may declare "
                        f"(default {DEFAULT_MAX_IMAGE_PIXELS:,}, as training's data.max_image_pixels)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def check_dataset_images(dataset_dir: str | os.PathLike, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
                         progress: bool = True, shown: int = SHOWN_BAD_IMAGES) -> int:
    """Open the header of every image of a dataset once; return how many images there are.

    Raises ``DatasetError`` (exit 2 in the CLI) listing *every* bad image at once: a path that
    is absolute or resolves outside the dataset directory, a missing file, a non-regular file,
    an image Pillow cannot identify, or one declaring more than ``max_pixels`` pixels; the
    message gives the count per kind and the first ``shown`` with row, pin id and path.
    """
    from tqdm.auto import tqdm

    from graph.dataset import DatasetError, read_pin_images
    from graph.features import image_path_problem
    from pinclip.transforms import ImageReadError, read_image_size

    pins = read_pin_images(dataset_dir, progress)
    real_root = os.path.realpath(pins.root)
    paths = pins.images.to_pylist()
    total = len(paths) - pins.images.null_count
    bad: list[tuple[int, str, str, str]] = []  # (row, path, reason, detail)
    with tqdm(total=total, unit="image", desc="checking images", disable=not progress, leave=False) as bar:
        for row, rel in enumerate(paths):
            if rel is None:
                continue
            problem = image_path_problem(real_root, rel)
            if problem is not None:
                bad.append((row, rel, "outside", problem))
            else:
                try:
                    read_image_size(os.path.join(pins.root, rel), max_pixels)
                except ImageReadError as exc:
                    bad.append((row, rel, exc.reason, exc.detail))
            bar.update(1)
    if not bad:
        return total
    counts = Counter(reason for _, _, reason, _ in bad)
    summary = ", ".join(f"{counts[r]:,} {_REASON_WORDS[r]}" for r in _REASON_WORDS if counts[r])
    lines = [f"  row {row}, pin_id {pins.pin_ids[row].as_py()!r}: {path}: {detail}"
             for row, path, _, detail in bad[:shown]]
    if len(bad) > shown:
        lines.append(f"  ... and {len(bad) - shown:,} more")
    raise DatasetError(pins.table, f"{len(bad):,} of {total:,} images are bad ({summary}; "
                       f"--max-image-pixels {max_pixels:,}):\n" + "\n".join(lines) +
                       "\nfix or remove them (or train with data.on_bad_image=skip, which treats "
                       "them as pins without an image)", column="image")


def run(args: argparse.Namespace) -> int:
    from graph.errors import InputError
    from graph.external_build import parse_bytes
    from graph.locks import exclusive_lock

    if args.memory_budget is not None:
        try:
            parse_bytes(args.memory_budget)  # a bad value fails before any reading
        except ValueError as exc:
            raise InputError(f"--memory-budget: {exc}") from None
    if args.max_image_pixels < 1:
        raise InputError(f"--max-image-pixels {args.max_image_pixels}: must be at least 1")
    t0 = time.perf_counter()
    # One lock over the image check and the build, so a second build-graph into the same --out is
    # refused at once rather than after its own long read (atomic_directory re-enters the lock).
    with exclusive_lock(args.out, "graph store"):
        g = _check_and_build(args)
    _print_summary(args, g, t0)
    return 0


def _check_and_build(args: argparse.Namespace):
    from graph.dataset import build_graph_from_dataset
    from graph.output_dir import check_output_dir
    from graph.storage import STORE_OUTPUT

    t0 = time.perf_counter()
    if args.check_images:
        check_output_dir(args.out, STORE_OUTPUT)  # a refused --out fails before the (long) check
        checked = check_dataset_images(args.dataset_dir, args.max_image_pixels, progress=not args.quiet)
        print(f"checked {checked:,} images in {time.perf_counter() - t0:.1f} s: every header reads, "
              "within the pixel cap")
    g = build_graph_from_dataset(args.dataset_dir, args.out, cold_start_fraction=args.cold_start_fraction,
                                 val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                                 seed=args.seed, progress=not args.quiet,
                                 memory_budget=args.memory_budget)
    return g


def _print_summary(args: argparse.Namespace, g, t0: float) -> None:
    from graph.stats import graph_stats

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
