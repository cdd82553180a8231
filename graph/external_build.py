"""Out-of-core graph build: a dataset whose edges do not fit in memory, to a graph store.

``build_graph_external(dataset_dir, out_dir, memory_budget=...)`` writes the same store as
``graph.dataset.build_graph_from_dataset`` (every file byte for byte, the same manifest), with
the edge work bounded by ``memory_budget``. ``build_graph_from_dataset(...,
memory_budget=...)`` and ``pinclip build-graph --memory-budget 2GB`` dispatch here.

How (every step inside the atomic temporary directory of the new store, so a failed or killed
build leaves an existing store as it was):

1. Read ``pins`` and ``boards`` with the in-memory builder's reader (``graph.dataset``): the node
   tables, their external-to-internal id maps and features are held in memory, as there.
2. Stream ``edges`` in chunks of ``plan.chunk_rows`` rows (same validation and errors naming
   file, row and column), map ids, count degrees, and append each edge to an on-disk bucket by
   pin-id range (``graph.buckets.EdgeBuckets``: stable, so each bucket keeps input order).
3. Pin direction: load consecutive buckets up to ``plan.sort_edges`` edges, sort and merge
   repeats with the in-memory kernel (``graph.csr.sort_direction``: weights summed in
   float64 in input order then stored float32, earliest timestamp kept), append the rows to the
   final ``pin_*.npy`` files, and append the merged edges to buckets by board-id range
   (bounds balanced by board degree).
4. Board direction: the same over the board buckets (no repeats are left; each merged edge's
   weight and timestamp travel with it, so both directions hold the same values, as in the
   in-memory build).
5. Splits (``graph.splits``) from ``pin_indptr`` alone, pin range by pin range: the uniform
   draws come from the same generator in the same order, so they equal ``make_splits``'s.
6. Features, id tables, indptr arrays and the manifest through ``graph.storage``.

Memory: ``memory_budget`` is the resident memory the whole process should stay within. The
build measures what the process already holds once the node tables are read (interpreter,
imports, id maps, features) and reserves room for the per-node arrays (degrees, indptr: about
32 bytes a pin or board); the rest is the working set that sizes chunks and sort groups. If
that leaves under 64 MiB the build warns and uses 64 MiB (the budget cannot be met).

Limitations: pins and boards (ids, features, per-node arrays) must fit in memory: a billion
pins would need the id maps out of core too. The edges of one node are sorted in one piece, so
one node with more edges than ``sort_edges`` exceeds the working set by that much. Bucket files
take about 20 bytes an edge for each direction (the input edges, then the merged ones) next to
the store being written; they are deleted as each group is consumed.
"""
from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow as pa
from tqdm.auto import tqdm

from graph import storage
from graph.atomic import atomic_directory
from graph.buckets import EdgeBuckets, NpyAppender, balanced_bounds, record_dtype
from graph.build_inputs import check_fractions, cold_start_source, map_ids, read_nodes, source_record
from graph.csr import expand_indptr, index_dtype_for, sort_direction
from graph.errors import InputError
from graph.features import FeatureStore
from graph.splits import COLD, TEST, TRAIN, VAL
from graph.output_dir import check_output_dir
from graph.storage import STORE_OUTPUT
from graph.tables import TABLE_NAMES, TableReader, find_table

# The default budget: a measured peak RSS of 1.13 GB at 100M edges, 10M pins, 1M boards
# (benchmarks/RESULTS.md, "Out-of-core build"); the per-edge figures below are upper estimates.
DEFAULT_MEMORY_BUDGET = 1_500_000_000
# build_graph_from_dataset with no budget goes out of core when the edges file is this large.
AUTO_EXTERNAL_BYTES = 1 << 30
# Resident bytes per edge (upper estimates, all columns): while reading a chunk (Arrow batch,
# mapped ids, record, partition order and copy) and while sorting a group (the record and its
# columns, sort key and order, gathered attributes, merged output, board-bucket records).
READ_BYTES_PER_ROW = 160
SORT_BYTES_PER_EDGE = 112
# Per pin and per board, beside the working set: degrees (8 + 8), deduplicated counts (8),
# bucket lookup (2), then indptr (8). The splits' per-pin arrays come after the sorts.
NODE_BYTES = 32
MIN_WORKING_BYTES = 64 << 20  # what a budget below the baseline gets (with a warning)
MAX_CHUNK_ROWS = 1 << 20
MIN_CHUNK_ROWS = 64
MIN_SORT_EDGES = 64
MAX_BUCKETS = 4096          # bucket files per partition (each chunk opens the ones it touches)
_UNITS = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}


def parse_bytes(value: int | str) -> int:
    """Bytes from an int or a string: ``"2000000"``, ``"2GB"`` / ``"2G"`` (10^9), ``"1.5GiB"`` (2^30).

    Units K, M, G, T are decimal; with ``i`` (KiB, MiB, GiB, TiB) binary. Case-insensitive.
    """
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        n = int(value)
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?)b?\s*", str(value), flags=re.I)
        if not m or (m.group(3) and not m.group(2)):
            raise InputError(f"memory budget {value!r}: expected bytes such as 2000000000, '2GB' or '1.5GiB'")
        unit = m.group(2).lower()
        scale = 1024 ** "kmgt".index(unit) * 1024 if m.group(3) else _UNITS[unit]
        n = int(float(m.group(1)) * scale)
    if n <= 0:
        raise InputError(f"memory budget {value!r} must be positive")
    return n


def choose_memory_budget(edges_path: Path, memory_budget: int | str | None) -> int | None:
    """The budget of an out-of-core build, or None for the in-memory build (see module doc)."""
    if memory_budget is not None:
        return parse_bytes(memory_budget)
    if Path(edges_path).stat().st_size >= AUTO_EXTERNAL_BYTES:
        return DEFAULT_MEMORY_BUDGET
    return None


@dataclass(frozen=True)
class BuildPlan:
    """How a build spends its memory budget.

    memory_budget  bytes the process should stay within
    working_bytes  of which the edge work may use (budget minus the baseline)
    chunk_rows     input edge rows read, mapped and bucketed at a time
    sort_edges     edges loaded and sorted together (one group of buckets)
    num_buckets    pin-range buckets of the first pass (groups combine or split them)
    """

    memory_budget: int
    working_bytes: int
    chunk_rows: int
    sort_edges: int
    num_buckets: int

    @property
    def csv_block_bytes(self) -> int:
        # CSV edge rows are short (ids and a number or two); a block must hold whole rows.
        return int(min(max(self.chunk_rows * 24, 64 << 10), 16 << 20))


def plan_build(memory_budget: int, num_edges: int, num_pins: int, num_boards: int,
               baseline_bytes: int) -> BuildPlan:
    """Size chunks and groups: deterministic in its arguments.

    ``num_edges``: an estimate of the input edge rows (sets how finely the first pass buckets);
    ``baseline_bytes``: resident memory already held (interpreter, imports, node tables).
    """
    working = memory_budget - baseline_bytes - NODE_BYTES * (num_pins + num_boards)
    if working < MIN_WORKING_BYTES:
        warnings.warn(f"memory budget {memory_budget:,} bytes leaves less than {MIN_WORKING_BYTES >> 20} MiB "
                      f"beside what the process already holds plus the per-node arrays "
                      f"({memory_budget - working:,} bytes): building with {MIN_WORKING_BYTES >> 20} MiB "
                      "of edge work, so the budget will be exceeded", stacklevel=3)
        working = MIN_WORKING_BYTES
    chunk_rows = int(min(max(working // READ_BYTES_PER_ROW, MIN_CHUNK_ROWS), MAX_CHUNK_ROWS))
    sort_edges = int(max(working // SORT_BYTES_PER_EDGE, MIN_SORT_EDGES))
    # Four buckets per group on average, so groups can be balanced from them.
    buckets = int(min(max(4 * -(-num_edges // sort_edges), 1), MAX_BUCKETS, max(num_pins, 1)))
    return BuildPlan(memory_budget, int(working), chunk_rows, sort_edges, buckets)


def _resident_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


# ---------------------------------------------------------------------------- the build
def build_graph_external(dataset_dir: str | Path, out_dir: str | Path,
                         cold_start_fraction: float | None = None, val_fraction: float = 0.05,
                         test_fraction: float = 0.05, seed: int = 0, progress: bool = True,
                         memory_budget: int | str = DEFAULT_MEMORY_BUDGET,
                         plan: BuildPlan | None = None) -> Path:
    """Build the store of ``dataset_dir`` into ``out_dir`` out of core (see the module doc).

    Arguments as ``graph.dataset.build_graph_from_dataset``; ``plan`` overrides the sizes
    derived from ``memory_budget`` (tests use it to force many tiny groups). Returns
    ``out_dir``; raises ``DatasetError`` naming file, row and column on bad input.
    """
    budget = parse_bytes(memory_budget)
    check_fractions(cold_start_fraction, val_fraction, test_fraction)
    dataset_dir, out_dir = Path(dataset_dir), Path(out_dir)
    if out_dir.absolute() == dataset_dir.absolute():
        raise InputError(f"{out_dir}: the graph store cannot replace its own dataset directory")
    check_output_dir(out_dir, STORE_OUTPUT)
    paths = {name: find_table(dataset_dir, name) for name in TABLE_NAMES}
    pins = read_nodes(paths["pins"], "pins", progress)
    boards = read_nodes(paths["boards"], "boards", progress)
    reader = TableReader(paths["edges"], "edges", progress)
    P, B = len(pins.ids), len(boards.ids)
    if plan is None:
        # Arrow's allocator keeps freed memory for reuse: hand it back before measuring.
        pa.default_memory_pool().release_unused()
        rows = reader.row_estimate
        plan = plan_build(budget, rows, P, B, _resident_bytes())
    reader.batch_rows, reader.csv_block_bytes = plan.chunk_rows, plan.csv_block_bytes
    with atomic_directory(out_dir, STORE_OUTPUT) as tmp:
        _Build(tmp, plan, pins, boards, reader, progress).run(
            paths, dataset_dir, cold_start_fraction, val_fraction, test_fraction, seed)
    return out_dir


class _Build:
    """One out-of-core build writing into the temporary directory ``tmp``."""

    def __init__(self, tmp: Path, plan: BuildPlan, pins, boards, reader: TableReader,
                 progress: bool) -> None:
        self.tmp, self.plan, self.pins, self.boards, self.reader = tmp, plan, pins, boards, reader
        self.progress = progress
        self.P, self.B = len(pins.ids), len(boards.ids)
        self.idx_dtype = index_dtype_for(self.P, self.B)
        names = {c.name for c in reader.present}
        self.has_w, self.has_t = "weight" in names, "timestamp" in names
        self.rec_dtype = record_dtype(self.idx_dtype, self.has_w, self.has_t)
        self.scratch = tmp / ".buckets"  # inside the atomic temp dir: removed on any failure
        self.arrays: dict[str, dict[str, Any]] = {}

    def run(self, paths: dict[str, Path], dataset_dir: Path, cold_start_fraction: float | None,
            val_fraction: float, test_fraction: float, seed: int) -> None:
        pin_buckets, pin_degree, board_degree = self._bucket_input()
        num_raw = self.reader.num_rows
        pin_indptr, board_buckets, num_dup = self._pin_direction(pin_buckets, pin_degree, board_degree, num_raw)
        del pin_buckets, pin_degree
        board_indptr = self._board_direction(board_buckets, board_degree, int(pin_indptr[-1]))
        del board_buckets, board_degree
        shutil.rmtree(self.scratch)
        self.arrays["pin_indptr"] = storage.write_array(self.tmp, "pin_indptr", pin_indptr)
        self.arrays["board_indptr"] = storage.write_array(self.tmp, "board_indptr", board_indptr)
        del board_indptr
        fresh, frac = cold_start_source(self.pins, cold_start_fraction)
        splits = _write_splits(self.tmp, pin_indptr, fresh, frac, val_fraction, test_fraction,
                               seed, self.plan.sort_edges)
        source = source_record(dataset_dir, paths, self.P, self.B, num_raw, num_dup)
        self._write_manifest(splits, source, dataset_dir)

    # -------------------------------------------------------------- pass 1: input -> pin buckets
    def _bucket_input(self) -> tuple[EdgeBuckets, np.ndarray, np.ndarray]:
        """Stream the edges file into pin-range buckets; (buckets, raw pin / board degrees int64)."""
        bounds = np.unique(np.linspace(0, self.P, self.plan.num_buckets + 1).round().astype(np.int64))
        buckets = EdgeBuckets(self.scratch, "pin", bounds, self.rec_dtype)
        pin_degree = np.zeros(self.P, dtype=np.int64)
        board_degree = np.zeros(self.B, dtype=np.int64)
        path = self.reader.path
        for offset, cols in self.reader.batches():
            p = map_ids(cols["pin_id"], self.pins, "pin_id", path, offset)
            b = map_ids(cols["board_id"], self.boards, "board_id", path, offset)
            rec = np.empty(p.shape[0], dtype=self.rec_dtype)
            rec["row"], rec["col"] = p, b
            if self.has_w:  # float64 -> float32 with the rounding of the in-memory astype
                rec["weight"] = cols["weight"].to_numpy(zero_copy_only=False)
            if self.has_t:
                rec["timestamp"] = cols["timestamp"].to_numpy(zero_copy_only=False)
            del cols
            _count_into(pin_degree, p)
            _count_into(board_degree, b)
            del p, b
            buckets.append(rec)
        return buckets, pin_degree, board_degree

    # -------------------------------------------------------------- passes 2 and 3
    def _appenders(self, side: str, max_len: int) -> dict[str, NpyAppender]:
        out = {"indices": NpyAppender(self.tmp, f"{side}_indices", self.idx_dtype, max_len)}
        if self.has_w:
            out["weight"] = NpyAppender(self.tmp, f"{side}_weights", np.float32, max_len)
        if self.has_t:
            out["timestamp"] = NpyAppender(self.tmp, f"{side}_timestamps", np.int64, max_len)
        return out

    def _sorted_groups(self, buckets: EdgeBuckets, degrees: np.ndarray, num_cols: int, side: str,
                       max_len: int, bar_total: int):
        """Sort every group of ``buckets`` by (row, col); append the rows to ``SIDE_*.npy``.

        Yields ``(lo, counts int64 [hi - lo], indices, weights, timestamps, num_dup)`` per group
        (merged edges in row-major order), and fills ``self.arrays`` when done.
        """
        out = self._appenders(side, max_len)
        bar = tqdm(total=bar_total, unit="edges", unit_scale=True, desc=f"sorting by {side}",
                   disable=not self.progress, leave=False)
        try:
            for lo, hi, load in buckets.groups(degrees, self.plan.sort_edges, MAX_BUCKETS,
                                               self.plan.chunk_rows):
                rec = load()
                n = rec.shape[0]
                if n == 0:
                    continue
                rows = rec["row"].astype(np.int64)
                rows -= lo
                cols = np.ascontiguousarray(rec["col"])
                w = np.ascontiguousarray(rec["weight"]) if self.has_w else None
                t = np.ascontiguousarray(rec["timestamp"]) if self.has_t else None
                del rec
                indptr, indices, w, t, num_dup = _sort_group(rows, cols, hi - lo, num_cols, w, t,
                                                             self.idx_dtype)
                del rows, cols
                for key, values in (("indices", indices), ("weight", w), ("timestamp", t)):
                    if key in out:
                        out[key].append(values)
                bar.update(n)
                yield lo, np.diff(indptr), indices, w, t, num_dup
            for key, app in out.items():
                name = {"indices": "indices", "weight": "weights", "timestamp": "timestamps"}[key]
                self.arrays[f"{side}_{name}"] = app.close()
        finally:
            bar.close()
            for app in out.values():
                app.abort()

    def _pin_direction(self, pin_buckets: EdgeBuckets, pin_degree: np.ndarray,
                       board_degree: np.ndarray, num_raw: int) -> tuple[np.ndarray, EdgeBuckets, int]:
        """Pin -> board CSR; returns (pin_indptr int64 [P + 1], board buckets, repeats merged)."""
        bounds = balanced_bounds(board_degree, 0, self.B, self.plan.sort_edges, MAX_BUCKETS)
        board_buckets = EdgeBuckets(self.scratch, "board", bounds, self.rec_dtype)
        counts = np.zeros(self.P, dtype=np.int64)
        total_dup = 0
        for lo, c, indices, w, t, num_dup in self._sorted_groups(pin_buckets, pin_degree, self.B,
                                                                 "pin", num_raw, num_raw):
            counts[lo:lo + c.shape[0]] = c
            total_dup += num_dup
            rec = np.empty(indices.shape[0], dtype=self.rec_dtype)
            rec["row"] = indices  # the board
            rec["col"] = np.repeat(np.arange(lo, lo + c.shape[0], dtype=self.idx_dtype), c)
            if self.has_w:
                rec["weight"] = w
            if self.has_t:
                rec["timestamp"] = t
            del indices, w, t
            board_buckets.append(rec)
        return _indptr(counts), board_buckets, total_dup

    def _board_direction(self, board_buckets: EdgeBuckets, board_degree: np.ndarray, num_edges: int) -> np.ndarray:
        """Board -> pin CSR from the merged edges; returns board_indptr int64 [B + 1]."""
        counts = np.zeros(self.B, dtype=np.int64)
        for lo, c, _indices, _w, _t, num_dup in self._sorted_groups(
                board_buckets, board_degree, self.P, "board", num_edges, num_edges):
            assert num_dup == 0, "the pin direction merged every repeat"
            counts[lo:lo + c.shape[0]] = c
        return _indptr(counts)

    # -------------------------------------------------------------- manifest
    def _write_manifest(self, splits: dict[str, Any], source: dict[str, Any], dataset_dir: Path) -> None:
        """Everything ``PinBoardGraph.write_into`` writes besides the edge arrays, and the manifest."""
        # Already int64 / large_string, unique and non-null (``graph.dataset`` checked them), as
        # ``PinBoardGraph.from_edges`` would make them; its re-check (a hash table of every id,
        # 1.6 GB for 10M ids) is skipped here.
        pin_ids, board_ids = self.pins.ids, self.boards.ids
        tables = {"pin_ids": storage.write_table(self.tmp, "pin_ids", pa.table({"id": pin_ids})),
                  "board_ids": storage.write_table(self.tmp, "board_ids", pa.table({"id": board_ids}))}
        features = FeatureStore(self.pins.features, self.boards.features, root=dataset_dir.absolute())
        manifest = {
            "num_pins": self.P,
            "num_boards": self.B,
            "num_edges": int(self.arrays["pin_indices"]["shape"][0]),
            "index_dtype": self.idx_dtype.name,
            "has_weights": self.has_w,
            "has_timestamps": self.has_t,
            "pin_id_type": str(pin_ids.type),
            "board_id_type": str(board_ids.type),
            "arrays": self.arrays,
            "tables": tables,
            "features": features.write_into(self.tmp),
            "splits": splits,
            "source": source,
        }
        storage.write_manifest(self.tmp, manifest)


def _count_into(counts: np.ndarray, ids: np.ndarray) -> None:
    """``counts += bincount(ids)``; a chunk much shorter than ``counts`` is added in place
    (a full-length bincount per chunk was ~3x slower at 10M pins and 400k-row chunks)."""
    if ids.shape[0] * 4 < counts.shape[0]:
        np.add.at(counts, ids, 1)
    else:
        counts += np.bincount(ids, minlength=counts.shape[0])


def _indptr(counts: np.ndarray) -> np.ndarray:
    indptr = np.zeros(counts.shape[0] + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return indptr


def _sort_group(rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int,
                weights: np.ndarray | None, timestamps: np.ndarray | None, idx_dtype: np.dtype):
    """One group through the in-memory kernel (``graph.csr.sort_direction``), with rows local to
    the group (``rows`` int64).

    The kernel packs (row, col, position) into one int64 key when it fits, else sorts stably;
    both give the same arrays (``graph.csr``), so the key layout may differ from the in-memory
    build's (whose rows are global) without changing a byte.
    """
    return sort_direction(rows, cols, num_rows, num_cols, weights, timestamps, idx_dtype)


# ---------------------------------------------------------------------------- splits
def _pin_chunks(indptr: np.ndarray, max_edges: int):
    """Consecutive pin ranges ``[a, b)`` of at most ``max_edges`` edges (or one pin)."""
    P, a = indptr.shape[0] - 1, 0
    while a < P:
        b = int(np.searchsorted(indptr, indptr[a] + max_edges, side="right")) - 1
        b = min(max(b, a + 1), P)
        yield a, b
        a = b


def _split_chunk(local_indptr: np.ndarray, degree: np.ndarray, is_cold: np.ndarray, u: np.ndarray,
                 val_fraction: float, test_fraction: float) -> np.ndarray:
    """``make_splits``'s rule on the edges of a pin range (``u``: that range's uniform draws).

    Every pin's edges lie inside one range, so the per-pin maximum of ``u`` is the same.
    """
    edge_pin = expand_indptr(local_indptr)
    cold_e = is_cold[edge_pin]
    split = np.zeros(u.shape[0], dtype=np.int8)
    eligible = (~cold_e) & (degree[edge_pin] >= 2)
    split[eligible & (u < val_fraction)] = VAL
    split[eligible & (u >= val_fraction) & (u < val_fraction + test_fraction)] = TEST
    has = degree > 0
    keep = np.full(degree.shape[0], -1.0, dtype=np.float64)
    keep[has] = np.maximum.reduceat(u, local_indptr[:-1][has])
    split[(u == keep[edge_pin]) & ~cold_e] = TRAIN
    split[cold_e] = COLD
    return split


def _write_splits(tmp: Path, indptr: np.ndarray, fresh: np.ndarray | None, frac: float,
                  val_fraction: float, test_fraction: float, seed: int, chunk_edges: int) -> dict[str, Any]:
    """Write ``split_edge.npy`` / ``split_cold_start_pins.npy``; return the manifest's ``splits``.

    Equal to ``graph.splits.make_splits`` on the whole graph: the cold-start pins are drawn
    first, then one float64 uniform per edge in edge order, and numpy's generators give the
    same doubles whether drawn at once or in consecutive pieces.
    """
    P, E = indptr.shape[0] - 1, int(indptr[-1])
    degree = np.diff(indptr)
    rng = np.random.default_rng(seed)
    if fresh is not None:
        cold, source, frac_param = np.flatnonzero(fresh), "fresh_flag", None
    else:
        candidates = np.flatnonzero(degree > 0)
        k = int(round(frac * candidates.size))
        cold = np.sort(rng.choice(candidates, size=k, replace=False)) if k else np.zeros(0, np.int64)
        source, frac_param = "random", frac
    is_cold = np.zeros(P, dtype=bool)
    is_cold[cold] = True
    out = NpyAppender(tmp, "split_edge", np.int8, E)
    counts = np.zeros(4, dtype=np.int64)
    try:
        for a, b in _pin_chunks(indptr, chunk_edges):
            ea, eb = int(indptr[a]), int(indptr[b])
            if eb == ea:
                continue
            split = _split_chunk(indptr[a:b + 1] - ea, degree[a:b], is_cold[a:b], rng.random(eb - ea),
                                 val_fraction, test_fraction)
            counts += np.bincount(split, minlength=4)
            out.append(split)
        edge_rec = out.close()
    finally:
        out.abort()
    names = ("train", "val", "test", "cold_start")
    return {
        "params": {"val_fraction": val_fraction, "test_fraction": test_fraction,
                   "cold_start_fraction": frac_param, "seed": seed, "cold_start_source": source},
        "counts": {**{names[i]: int(counts[i]) for i in range(4)}, "cold_start_pins": int(cold.size)},
        "arrays": {"edge_split": edge_rec,
                   "cold_start_pins": storage.write_array(tmp, "split_cold_start_pins", cold.astype(np.int64))},
    }


__all__ = ["BuildPlan", "DEFAULT_MEMORY_BUDGET", "AUTO_EXTERNAL_BYTES", "build_graph_external",
           "choose_memory_budget", "parse_bytes", "plan_build"]
