"""Build the two CSR views (pin -> boards, board -> pins) of a bipartite edge list.

Everything here is plain numpy on host memory; the store hands out torch views of the result.
Edge order convention: an edge's id is its position in the pin-major CSR (``pin_indices``);
within each pin, boards are sorted ascending, and within each board, pins are sorted ascending.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from graph import csr_compiled
from graph import csr_direction as direction
from graph.csr_direction import sort_direction

INT32_MAX = np.iinfo(np.int32).max


def index_dtype_for(num_pins: int, num_boards: int) -> np.dtype:
    """int32 indices when every node id fits, int64 otherwise."""
    return np.dtype(np.int32) if max(num_pins, num_boards) <= INT32_MAX else np.dtype(np.int64)


@dataclass
class BipartiteCSR:
    """Both CSR directions of a deduplicated bipartite graph, aligned per-edge attributes.

    Shapes (E = deduplicated edges, P pins, B boards):
      pin_indptr    int64 [P + 1]    pin_indices    int32/int64 [E]  (board ids)
      board_indptr  int64 [B + 1]    board_indices  int32/int64 [E]  (pin ids)
      pin_weights / board_weights        float32 [E] or None (aligned with the indices above)
      pin_timestamps / board_timestamps  int64 [E] or None
      board_to_pin_edge: not stored; recover it with ``board_edge_ids`` when needed.
    """

    num_pins: int
    num_boards: int
    pin_indptr: np.ndarray
    pin_indices: np.ndarray
    board_indptr: np.ndarray
    board_indices: np.ndarray
    pin_weights: np.ndarray | None = None
    board_weights: np.ndarray | None = None
    pin_timestamps: np.ndarray | None = None
    board_timestamps: np.ndarray | None = None
    num_duplicates: int = 0

    @property
    def num_edges(self) -> int:
        return int(self.pin_indices.shape[0])


def _indptr_from_sorted(ids: np.ndarray, n: int) -> np.ndarray:
    counts = np.bincount(ids, minlength=n)
    indptr = np.empty(n + 1, dtype=np.int64)
    indptr[0] = 0
    np.cumsum(counts, out=indptr[1:])
    return indptr


# Below this many edges both directions run on the calling thread.
_PARALLEL_MIN_EDGES = 1 << 18
# When the compiled build (``graph.csr_compiled``) runs, numba importing: from
# ``COMPILED_MIN_EDGES`` edges, or from ``COMPILED_WARM_MIN_EDGES`` once this process has loaded
# its kernels. Its once-per-process start (numba's import, LLVM, the kernels from numba's
# cache: about 0.5 s on the development VM) is worth paying for large graphs only: it saves
# about 22 ns an edge in a fresh process (0.21 to 0.25 s at 10M edges, benchmarks/RESULTS.md,
# "Graph build", so it pays from about 22M edges) and needs half the memory. Tests lower them.
COMPILED_MIN_EDGES = 1 << 25
COMPILED_WARM_MIN_EDGES = 1 << 20


@dataclass(frozen=True)
class EdgeRanges:
    """The smallest and largest pin and board id of an edge list, and of its float32 weights'
    bit patterns (None when not computed): what the input checks of ``from_edges`` reduce to."""
    pin_min: int
    pin_max: int
    board_min: int
    board_max: int
    weight_bits_min: int | None = None
    weight_bits_max: int | None = None


def edge_ranges(pins: np.ndarray, boards: np.ndarray, weights: np.ndarray | None = None) -> EdgeRanges:
    """``EdgeRanges`` of int64 pins and boards [E] and weights [E] or None (the weight entries
    are computed for float32 weights only; E == 0: all zero). Six numpy reductions; from
    ``_PARALLEL_MIN_EDGES`` edges the ids' and the weights' run on two threads (numpy releases
    the GIL in them): 8 to 9 ms against 12 to 15 ms in one thread at 10M edges on the development VM
    (ad-hoc timings; benchmarks/RESULTS.md, "Graph build", fourth update)."""
    n = int(pins.shape[0])
    if n == 0:
        return EdgeRanges(0, 0, 0, 0)
    bits = weights.view(np.uint32) if weights is not None and weights.dtype == np.float32 else None

    def of_pins():
        return (int(pins.min()), int(pins.max())) + ((int(bits.max()),) if bits is not None else (None,))

    def of_boards():
        return (int(boards.min()), int(boards.max())) + ((int(bits.min()),) if bits is not None else (None,))

    if n >= _PARALLEL_MIN_EDGES and (os.cpu_count() or 1) > 1:
        with ThreadPoolExecutor(max_workers=1) as pool:
            later = pool.submit(of_boards)
            p_lo, p_hi, w_hi = of_pins()
            b_lo, b_hi, w_lo = later.result()
    else:
        (p_lo, p_hi, w_hi), (b_lo, b_hi, w_lo) = of_pins(), of_boards()
    return EdgeRanges(p_lo, p_hi, b_lo, b_hi, w_lo, w_hi)


def build_bipartite_csr(
    pins: np.ndarray,
    boards: np.ndarray,
    num_pins: int,
    num_boards: int,
    weights: np.ndarray | None = None,
    timestamps: np.ndarray | None = None,
) -> BipartiteCSR:
    """Sort, deduplicate and index an edge list in both directions.

    Args:
      pins, boards: int64 [E], already validated to lie in ``[0, num_pins)`` / ``[0, num_boards)``.
      weights: float32 [E] or None. Repeated (pin, board) edges have their weights summed.
      timestamps: int64 [E] or None. Repeated edges keep the earliest timestamp (first save).

    Each direction sorts one int64 key per edge (see ``direction.sorted_direction``): ``pin, board``
    and, when there are weights or timestamps, the edge's position packed in the low bits, as
    long as ``bits(P) + bits(B) + bits(E) <= 63`` (1M pins, 100k boards, 10M edges: 20 + 17 + 24
    = 61); a larger graph with attributes takes a stable argsort of the key instead. The two
    directions run on two threads. Id spaces over 63 bits (and empty edge lists) take
    ``_build_by_argsort``. From ``COMPILED_MIN_EDGES`` edges (``COMPILED_WARM_MIN_EDGES`` once
    its kernels are loaded in this process), when numba imports, the compiled build
    (``graph.csr_compiled``: a radix sort of cache-sized bins of pins split over the threads, the
    float32 weights carried with the keys, the board direction by a counting sort of the pin
    direction) gives the same arrays faster where its records fit (``csr_compiled.fits``). Every
    path gives identical arrays.
    """
    pins = np.asarray(pins, dtype=np.int64)
    boards = np.asarray(boards, dtype=np.int64)
    idx_dtype = index_dtype_for(num_pins, num_boards)
    if weights is not None:  # float32 stays float32; anything else is summed in float64
        weights = np.asarray(weights)
        if weights.dtype != np.float32:
            weights = weights.astype(np.float64)
    if timestamps is not None:
        timestamps = np.asarray(timestamps, dtype=np.int64)
    n = pins.shape[0]
    pin_bits, board_bits, edge_bits = direction.bits(num_pins), direction.bits(num_boards), direction.bits(n)
    if n and pin_bits + board_bits <= direction.KEY_BITS:
        weights, timestamps = direction.constant_as_broadcast(weights), direction.constant_as_broadcast(timestamps)
        need_order = any(v is not None and not direction.is_constant(v) for v in (weights, timestamps))
        if not need_order or pin_bits + board_bits + edge_bits > direction.KEY_BITS:
            edge_bits = 0  # no positions in the key
        threshold = COMPILED_WARM_MIN_EDGES if csr_compiled.loaded() else COMPILED_MIN_EDGES
        if n >= threshold and csr_compiled.fits(num_pins, num_boards, n) and csr_compiled.enabled():
            (pin_indptr, pin_indices, pin_w, pin_t, board_indptr, board_indices, board_w, board_t,
             num_dup) = csr_compiled.build_both_directions(pins, boards, num_pins, num_boards, weights,
                                                           timestamps, idx_dtype)
        else:
            args_pin = (pins, boards, num_pins, board_bits, edge_bits, weights, timestamps, idx_dtype)
            args_board = (boards, pins, num_boards, pin_bits, edge_bits, weights, timestamps, idx_dtype)
            if n >= _PARALLEL_MIN_EDGES and (os.cpu_count() or 1) > 1:
                # numpy releases the GIL in sorts and ufunc loops: the directions run concurrently.
                with ThreadPoolExecutor(max_workers=1) as pool:
                    by_board = pool.submit(direction.sorted_direction, *args_board)
                    pin_indptr, pin_indices, pin_w, pin_t, num_dup = direction.sorted_direction(*args_pin)
                    board_indptr, board_indices, board_w, board_t, _ = by_board.result()
            else:
                pin_indptr, pin_indices, pin_w, pin_t, num_dup = direction.sorted_direction(*args_pin)
                board_indptr, board_indices, board_w, board_t, _ = direction.sorted_direction(*args_board)
        return BipartiteCSR(
            num_pins=num_pins,
            num_boards=num_boards,
            pin_indptr=pin_indptr,
            pin_indices=pin_indices,
            board_indptr=board_indptr,
            board_indices=board_indices,
            pin_weights=pin_w,
            board_weights=board_w,
            pin_timestamps=pin_t,
            board_timestamps=board_t,
            num_duplicates=num_dup,
        )
    return _build_by_argsort(pins, boards, num_pins, num_boards, weights, timestamps, idx_dtype)


def _build_by_argsort(pins: np.ndarray, boards: np.ndarray, num_pins: int, num_boards: int,
                      weights: np.ndarray | None, timestamps: np.ndarray | None,
                      idx_dtype: np.dtype) -> BipartiteCSR:
    """General path (empty graphs, id spaces too large to pack): stable argsorts."""
    if num_pins * max(num_boards, 1) < np.iinfo(np.int64).max:
        key = pins * num_boards + boards
        order = np.argsort(key, kind="stable")
        key = key[order]
        dup = key[1:] == key[:-1]
    else:  # pragma: no cover - only for > 3e9 x 3e9 id spaces
        order = np.lexsort((boards, pins))
        sp, sb = pins[order], boards[order]
        dup = (sp[1:] == sp[:-1]) & (sb[1:] == sb[:-1])
        key = None
    num_dup = int(dup.sum())
    if num_dup:
        keep = np.ones(order.shape[0], dtype=bool)
        keep[1:] = ~dup
        starts = np.flatnonzero(keep)
        first = order[starts]
        if weights is not None:
            weights = np.add.reduceat(np.asarray(weights, dtype=np.float64)[order], starts).astype(np.float32)
        if timestamps is not None:
            timestamps = np.minimum.reduceat(np.asarray(timestamps, dtype=np.int64)[order], starts)
        order = first
    else:
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float32)[order]
        if timestamps is not None:
            timestamps = np.asarray(timestamps, dtype=np.int64)[order]
    del key
    pin_of = pins[order]
    board_of = boards[order]
    del order

    pin_indptr = _indptr_from_sorted(pin_of, num_pins)
    # A stable sort by board keeps pins ascending within each board.
    by_board = np.argsort(board_of, kind="stable")
    board_indptr = _indptr_from_sorted(board_of, num_boards)
    return BipartiteCSR(
        num_pins=num_pins,
        num_boards=num_boards,
        pin_indptr=pin_indptr,
        pin_indices=board_of.astype(idx_dtype, copy=False),
        board_indptr=board_indptr,
        board_indices=pin_of[by_board].astype(idx_dtype, copy=False),
        pin_weights=weights,
        board_weights=None if weights is None else weights[by_board],
        pin_timestamps=timestamps,
        board_timestamps=None if timestamps is None else timestamps[by_board],
        num_duplicates=num_dup,
    )


def expand_indptr(indptr: np.ndarray) -> np.ndarray:
    """Row id of every CSR entry: int64 [indptr[-1]]."""
    n = indptr.shape[0] - 1
    return np.repeat(np.arange(n, dtype=np.int64), np.diff(indptr))


def board_edge_ids(pin_indptr: np.ndarray, pin_indices: np.ndarray, board_indptr: np.ndarray,
                   board_indices: np.ndarray) -> np.ndarray:
    """For each board-major CSR entry, the id (pin-major position) of the same edge: int64 [E].

    Uses the sort invariant: both views list edges in (pin, board) order within their rows.
    """
    num_boards = board_indptr.shape[0] - 1
    pin_key = expand_indptr(pin_indptr) * num_boards + pin_indices.astype(np.int64)
    board_key = board_indices.astype(np.int64) * num_boards + expand_indptr(board_indptr)
    # pin_key is sorted ascending (pin-major, boards ascending) so a binary search finds each edge.
    return np.searchsorted(pin_key, board_key)


# Elements per chunk of the structural check: a chunk (4-8 MB) stays in cache between its min
# and its max, so each array is read from memory once (100M int32 indices: 17 ms against 25 ms
# for two whole-array passes, page cache warm), and no temporary grows with E.
STRUCTURE_CHUNK = 1 << 20


@dataclass(frozen=True)
class StructureProblem:
    """The first violation of a CSR invariant: ``array`` ("indptr" or "indices"), the first bad
    ``position`` in it, the ``value`` found there and a ``problem`` sentence."""

    array: str
    position: int
    value: int
    problem: str


def find_structure_problem(indptr: np.ndarray, indices: np.ndarray, num_cols: int,
                           chunk: int = STRUCTURE_CHUNK) -> StructureProblem | None:
    """Check one CSR direction for what would make indexing it unsafe; None when it is sound.

    indptr: integer [R + 1], must start at 0, never decrease and end at ``E = len(indices)``;
    indices: integer [E], must lie in ``[0, num_cols)``. Order within a row is not checked.
    Reads each array once, ``chunk`` elements at a time (works on memory maps without copying
    them): O(E) but sequential, about 20 ms per 100M int32 indices from the page cache.
    """
    if indptr.dtype.kind not in "iu" or indices.dtype.kind not in "iu":
        bad = "indptr" if indptr.dtype.kind not in "iu" else "indices"
        dtype = (indptr if bad == "indptr" else indices).dtype
        return StructureProblem(bad, 0, 0, f"{bad} dtype {dtype} is not an integer type")
    num_edges = int(indices.shape[0])
    if indptr.shape[0] == 0:
        return StructureProblem("indptr", 0, 0, "indptr is empty (it needs one entry per row plus one)")
    if int(indptr[0]) != 0:
        return StructureProblem("indptr", 0, int(indptr[0]), f"indptr starts at {int(indptr[0])}, not 0")
    last = indptr.shape[0] - 1
    # Consecutive chunks overlap by one entry so every pair (i, i + 1) is compared once.
    for start in range(0, last, chunk):
        part = indptr[start:min(start + chunk, last) + 1]
        down = part[1:] < part[:-1]
        if down.any():
            i = start + 1 + int(np.flatnonzero(down)[0])
            return StructureProblem("indptr", i, int(indptr[i]),
                                    f"indptr decreases from {int(indptr[i - 1])} to {int(indptr[i])} at position {i} "
                                    "(it must be non-decreasing)")
    if int(indptr[last]) != num_edges:
        return StructureProblem("indptr", last, int(indptr[last]),
                                f"indptr ends at {int(indptr[last])} (position {last}), not at the number "
                                f"of edges {num_edges}")
    for start in range(0, num_edges, chunk):
        part = indices[start:start + chunk]
        if int(part.min()) < 0 or int(part.max()) >= num_cols:
            i = start + int(np.flatnonzero((part < 0) | (part >= num_cols))[0])
            return StructureProblem("indices", i, int(indices[i]),
                                    f"index out of range [0, {num_cols}): {int(indices[i])} at position {i}")
    return None
