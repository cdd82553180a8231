"""Build the two CSR views (pin -> boards, board -> pins) of a bipartite edge list.

Everything here is plain numpy on host memory; the store hands out torch views of the result.
Edge order convention: an edge's id is its position in the pin-major CSR (``pin_indices``);
within each pin, boards are sorted ascending, and within each board, pins are sorted ascending.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
    """
    pins = np.asarray(pins, dtype=np.int64)
    boards = np.asarray(boards, dtype=np.int64)
    idx_dtype = index_dtype_for(num_pins, num_boards)
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
