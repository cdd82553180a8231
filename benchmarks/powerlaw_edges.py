"""Deterministic synthetic power-law Pin-Board graph, written in the dataset format.

    python benchmarks/powerlaw_edges.py                      # 1M pins, 100k boards, 10M edges
    python benchmarks/powerlaw_edges.py --pins 10000 --boards 1000 --edges 100000 --seed 0
    python benchmarks/powerlaw_edges.py --json --data-dir /scratch/bench    # outside the checkout

Output (cached by parameters; a finished directory is reused): ``DATA_DIR/
powerlaw_p{P}_b{B}_e{E}_s{S}/`` (``--data-dir``, default ``benchmarks/_data/``, git-ignored) holding the three tables of the dataset format (see
docs / DESIGN: ``pins.parquet`` pin_id int64 + null text/image, ``boards.parquet`` board_id int64
+ null name, ``edges.parquet`` pin_id int64, board_id int64, weight float32) plus
``edges_pins.npy`` / ``edges_boards.npy`` / ``edges_weights.npy`` (the same edge columns as raw
arrays, so benchmarks can exclude Parquet decoding) and ``meta.json``.

The model (every draw from one seeded ``numpy.random.Generator``):
  * pin degrees: every pin has at least one edge; the other ``E - P`` edges are spread over pins
    in proportion to Zipf weights ``rank ** -pin_exponent`` (ranks randomly permuted over ids);
  * boards: each edge's board is drawn with probability proportional to ``rank ** -board_exponent``
    (ranks permuted likewise), so board sizes follow a Zipf law too;
  * repeated (pin, board) pairs are kept (real save logs repeat them), the edge rows are shuffled,
    weights are uniform in [0.5, 1.5).
External ids are dense: ``pin_id`` = row of ``pins.parquet`` (0..P-1), ``board_id`` likewise.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent / "_data"
GENERATOR_VERSION = 2
# Rank-size exponents s: a Zipf rank-size law r ** -s has a degree tail P(d) ~ d ** -(1 + 1/s).
PIN_EXPONENT = 0.5     # degree tail ~ d^-3; top pin ~ 4.5k boards at the default size
BOARD_EXPONENT = 0.8   # size tail ~ d^-2.25; top board ~ 2% of all edges


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """float64 [n] probabilities ``rank ** -exponent`` normalized, ranks permuted over ids."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    w /= w.sum()
    return w[rng.permutation(n)]


def generate_edges(num_pins: int, num_boards: int, num_edges: int, seed: int = 0,
                   pin_exponent: float = PIN_EXPONENT, board_exponent: float = BOARD_EXPONENT
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pins int64 [E], boards int64 [E], weights float32 [E]), deterministic in ``seed``."""
    if num_edges < num_pins:
        raise ValueError(f"--edges {num_edges} < --pins {num_pins}: every pin gets at least one edge")
    rng = np.random.default_rng(seed)
    pin_p = _zipf_weights(num_pins, pin_exponent, rng)
    degrees = 1 + rng.multinomial(num_edges - num_pins, pin_p)
    pins = np.repeat(np.arange(num_pins, dtype=np.int64), degrees)
    board_p = _zipf_weights(num_boards, board_exponent, rng)
    cdf = np.cumsum(board_p)
    cdf /= cdf[-1]
    boards = np.searchsorted(cdf, rng.random(num_edges), side="right").astype(np.int64)
    np.minimum(boards, num_boards - 1, out=boards)
    order = rng.permutation(num_edges)
    pins = pins[order]
    boards = boards[order]
    del order
    weights = (0.5 + rng.random(num_edges, dtype=np.float32)).astype(np.float32)
    return pins, boards, weights


def dataset_dir(num_pins: int, num_boards: int, num_edges: int, seed: int = 0,
                root: Path = DATA_DIR) -> Path:
    return Path(root) / f"powerlaw_p{num_pins}_b{num_boards}_e{num_edges}_s{seed}"


def ensure_dataset(num_pins: int = 1_000_000, num_boards: int = 100_000,
                   num_edges: int = 10_000_000, seed: int = 0, root: Path = DATA_DIR,
                   verbose: bool = False) -> Path:
    """Write (once) and return the dataset directory for these parameters."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = dataset_dir(num_pins, num_boards, num_edges, seed, root)
    meta_path = out / "meta.json"
    if meta_path.exists():
        meta = json.loads(meta_path.read_text())
        if meta.get("generator_version") == GENERATOR_VERSION:
            return out
    t0 = time.perf_counter()
    pins, boards, weights = generate_edges(num_pins, num_boards, num_edges, seed)
    t_gen = time.perf_counter() - t0
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pq.write_table(pa.table({
        "pin_id": pa.array(np.arange(num_pins, dtype=np.int64)),
        "text": pa.nulls(num_pins, pa.string()),
        "image": pa.nulls(num_pins, pa.string()),
    }), tmp / "pins.parquet")
    pq.write_table(pa.table({
        "board_id": pa.array(np.arange(num_boards, dtype=np.int64)),
        "name": pa.nulls(num_boards, pa.string()),
    }), tmp / "boards.parquet")
    pq.write_table(pa.table({"pin_id": pins, "board_id": boards, "weight": weights}),
                   tmp / "edges.parquet", row_group_size=1 << 20)
    np.save(tmp / "edges_pins.npy", pins)
    np.save(tmp / "edges_boards.npy", boards)
    np.save(tmp / "edges_weights.npy", weights)
    key = pins * num_boards + boards
    key.sort()
    distinct = int(np.count_nonzero(key[1:] != key[:-1])) + (1 if key.size else 0)
    del key
    meta = {
        "generator_version": GENERATOR_VERSION, "num_pins": num_pins, "num_boards": num_boards,
        "num_edges": num_edges, "distinct_edges": distinct, "seed": seed,
        "pin_exponent": PIN_EXPONENT, "board_exponent": BOARD_EXPONENT,
        "max_pin_degree": int(np.bincount(pins, minlength=num_pins).max()),
        "max_board_size": int(np.bincount(boards, minlength=num_boards).max()),
        "boards_with_edges": int(np.count_nonzero(np.bincount(boards, minlength=num_boards))),
        "generate_seconds": round(t_gen, 3),
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    if verbose:
        print(f"wrote {out} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    return out


def add_graph_size_args(ap: argparse.ArgumentParser) -> None:
    """The benchmark graph's size flags, shared by every benchmark that uses these edges."""
    ap.add_argument("--pins", type=int, default=1_000_000)
    ap.add_argument("--boards", type=int, default=100_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--seed", type=int, default=0)


def add_data_dir_arg(ap: argparse.ArgumentParser) -> None:
    """``--data-dir``: where the cached datasets (and a benchmark's work files) go."""
    ap.add_argument("--data-dir", "--root", dest="data_dir", type=Path, default=DATA_DIR,
                    help="where cached datasets and work files go (default benchmarks/_data, git-ignored; "
                         "any directory outside the checkout works)")


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_common import emit_report

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_graph_size_args(ap)
    add_data_dir_arg(ap)
    ap.add_argument("--json", action="store_true", help="print one JSON object (dir + meta.json) on stdout")
    ap.add_argument("--out", type=Path, help="also write that JSON object to this file")
    args = ap.parse_args(argv)
    out = ensure_dataset(args.pins, args.boards, args.edges, args.seed, args.data_dir, verbose=not args.json)
    meta = json.loads((out / "meta.json").read_text())
    if not emit_report({"dataset": str(out), **meta}, args.out, args.json):
        print(out)
        print((out / "meta.json").read_text(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
