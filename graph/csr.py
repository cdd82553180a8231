"""Build the two CSR views (pin -> boards, board -> pins) of a bipartite edge list.

Everything here is plain numpy on host memory; the store hands out torch views of the result.
Edge order convention: an edge's id is its position in the pin-major CSR (``pin_indices``);
within each pin, boards are sorted ascending, and within each board, pins are sorted ascending.
"""
from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
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


def _bits(n: int) -> int:
    """Number of bits that hold every value of ``[0, n)`` (at least 1)."""
    return max(int(n - 1).bit_length(), 1)


# Below this many edges both directions run on the calling thread.
_PARALLEL_MIN_EDGES = 1 << 18
# Bits of a non-negative int64 sort key (a test lowers it to exercise the argsort fallbacks).
_KEY_BITS = 63


class _Runs:
    """Runs of repeated edges in a sorted edge list (``dup[i]``: edge ``i + 1`` repeats edge ``i``).

    keep     bool [n]: True at the first edge of each run (the edges that stay)
    members  int64 [m]: positions of the edges in runs of two or more (few in practice)
    first    int64 [r]: offsets into ``members`` where each such run starts
    target   int64 [r]: index of each such run among the kept edges
    repeats  int64 [num_dup]: positions of the dropped edges (``keep`` False), ascending
    """

    def __init__(self, dup: np.ndarray) -> None:
        n = dup.shape[0] + 1
        self.keep = np.empty(n, dtype=bool)
        self.keep[0] = True
        np.logical_not(dup, out=self.keep[1:])
        in_run = np.zeros(n, dtype=bool)
        in_run[1:] = dup
        in_run[:-1] |= dup
        self.members = np.flatnonzero(in_run)
        del in_run
        self.first = np.flatnonzero(self.keep[self.members])
        starts = self.members[self.first]
        self.repeats = self.members[~self.keep[self.members]]  # sorted positions of dropped edges
        self.target = starts - np.searchsorted(self.repeats, starts)

    def merge(self, values: np.ndarray, op: np.ufunc, acc_dtype: type | None = None) -> np.ndarray:
        """``op.reduceat`` over each run of ``values`` ([n], sorted edge order), singletons copied.

        The runs with repeats are reduced in ``acc_dtype`` (default: the dtype of ``values``) and
        cast back. Each is reduced over exactly the same values in the same order as a
        ``reduceat`` over every run of the whole array in ``acc_dtype`` would, so the results
        are identical to that; singletons are copied, which is what the cast round trip gives.
        """
        out = values[self.keep]
        members = values[self.members]
        if acc_dtype is not None:
            members = members.astype(acc_dtype)
        out[self.target] = op.reduceat(members, self.first)
        return out


def _is_constant(values: np.ndarray | None) -> bool:
    return values is not None and values.strides == (0,)


def _gather(values: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """``values[order]``; a constant column (a stride-0 broadcast) is filled, not gathered."""
    if _is_constant(values):
        return np.full(values.shape[0], values[0], dtype=values.dtype)
    return values.take(order)


def _constant_as_broadcast(values: np.ndarray | None) -> np.ndarray | None:
    """A column whose values are all equal (all 1.0 weights, say) as a stride-0 view of one.

    Equal means equal bit patterns (compared as unsigned integers), so 0.0 and -0.0 differ.
    """
    if values is None or values.shape[0] < 2:
        return values
    bits = values.view(np.dtype(f"u{values.dtype.itemsize}"))
    if bits.min() == bits.max():
        return np.broadcast_to(values[:1], values.shape)
    return values


# Arrays of at least this many bytes are allocated pre-faulted (``_empty``); a test lowers it.
_POPULATE_MIN_BYTES = 1 << 22


def _empty(n: int, dtype) -> np.ndarray:
    """``np.empty(n, dtype)``; a large one comes from an anonymous ``mmap`` with
    ``MAP_POPULATE``, which faults all its pages in one call (Linux).

    Memory a process touches for the first time is the dominant cost of a build on the
    development VM, and varies a lot: 320 MB in fresh processes, interleaved, took 0.12 s
    (0.12 to 0.40) of system time pre-faulted this way, against 0.23 s (0.12 to 2.0) page by page
    in 4 KiB pages and 0.55 s (0.03 to 2.1) in the transparent huge pages numpy asks for. The
    array is a writeable view of the mapping (``base`` holds it; it is unmapped with the last
    reference), otherwise the same as ``np.empty``'s.
    """
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes < max(_POPULATE_MIN_BYTES, 1) or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(n, dtype=dtype)
    try:
        buf = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
    except (OSError, ValueError):  # pragma: no cover - e.g. a mapping limit: plain allocation
        return np.empty(n, dtype=dtype)
    return np.frombuffer(buf, dtype=dtype, count=n)


# Edges per chunk in the passes of ``_sorted_direction``: a chunk's temporaries (int64 buffers
# of this length, allocated once per direction and reused) stay in the core's cache. A test
# lowers it to put runs of repeats across chunk boundaries.
_CHUNK = 1 << 16


class _Scratch:
    """Chunk-sized buffers of one direction, allocated once and reused by every pass.

    Temporaries allocated inside the passes would cost page faults on every chunk (glibc hands
    blocks of this size back to the kernel when freed, on worker threads especially, and memory a
    process touches for the first time is slow on the development VM), so the passes write into
    these with ``out=`` and never allocate more than a few elements.
    """

    def __init__(self) -> None:
        self._bufs: dict[tuple[str, str], np.ndarray] = {}

    def get(self, name: str, m: int, dtype=np.int64) -> np.ndarray:
        k = (name, np.dtype(dtype).str)
        buf = self._bufs.get(k)
        if buf is None or buf.shape[0] < m:
            buf = self._bufs[k] = np.empty(max(m, _CHUNK), dtype=dtype)
        return buf[:m]

    def positions(self, m: int) -> np.ndarray:
        """``arange(m)`` (int64), to be read only."""
        ar = self._bufs.get(("arange", ""))
        if ar is None or ar.shape[0] < m:
            ar = self._bufs[("arange", "")] = np.arange(max(m, _CHUNK), dtype=np.int64)
        return ar[:m]


def _fill_keys(rows: np.ndarray, cols: np.ndarray, key: np.ndarray, row_shift: int,
               col_shift: int, with_pos: bool, scratch: _Scratch) -> None:
    """``key[:] = rows << row_shift | cols << col_shift [| position]``, a chunk at a time."""
    for c0 in range(0, key.shape[0], _CHUNK):
        c1 = min(c0 + _CHUNK, key.shape[0])
        k = np.left_shift(rows[c0:c1], row_shift, out=key[c0:c1])
        if col_shift:
            k |= np.left_shift(cols[c0:c1], col_shift, out=scratch.get("tmp", c1 - c0))
        else:
            k |= cols[c0:c1]
        if with_pos:
            k |= np.add(scratch.positions(c1 - c0), c0, out=scratch.get("tmp", c1 - c0))


def _scan_repeats(key: np.ndarray, shift: int, scratch: _Scratch) -> np.ndarray:
    """Positions ``i`` of the sorted ``key`` where ``key[i] >> shift`` (the (row, col) pair)
    equals ``key[i - 1] >> shift``: the repeated edges, ascending, int64."""
    found = []
    prev = None
    for c0 in range(0, key.shape[0], _CHUNK):
        c1 = min(c0 + _CHUNK, key.shape[0])
        m = c1 - c0
        h = np.right_shift(key[c0:c1], shift, out=scratch.get("h", m)) if shift else key[c0:c1]
        eq = scratch.get("eq", m, bool)
        eq[0] = prev is not None and h[0] == prev
        np.equal(h[1:], h[:-1], out=eq[1:])
        prev = h[m - 1]
        d = np.flatnonzero(eq)
        if d.size:
            d += c0
            found.append(d)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)


def _take_into(src: np.ndarray, idx: np.ndarray, dst: np.ndarray, scratch: _Scratch) -> None:
    """``dst[:] = src[idx]``, cast to ``dst``'s dtype (float64 weights into float32)."""
    if src.dtype == dst.dtype:
        np.take(src, idx, out=dst, mode="clip")  # in range; "clip" writes to out unbuffered
    else:
        tmp = scratch.get("cast", idx.shape[0], src.dtype)
        np.take(src, idx, out=tmp, mode="clip")
        dst[...] = tmp


def _extract(key: np.ndarray, repeats: np.ndarray, col_bits: int, pos_bits: int,
             indices: np.ndarray, gathers: list, scratch: _Scratch) -> None:
    """The sorted ``key`` less its ``repeats``: the cols into ``indices`` and, by the positions in
    the key's low bits, the attributes into their sorted arrays (``gathers``: (column, output)).

    A chunk without repeats writes through ``out=`` slices. In one with repeats every edge gets
    the output slot of the last kept edge at or before it (``np.put``), so a repeat writes over
    the slot of the edge it repeats: the same col, and attribute values that ``_merge_runs``
    replaces afterwards.
    """
    col_mask = (1 << col_bits) - 1
    pos_mask = (1 << pos_bits) - 1
    j = e = 0
    for c0 in range(0, key.shape[0], _CHUNK):
        c1 = min(c0 + _CHUNK, key.shape[0])
        m = c1 - c0
        kc = key[c0:c1]
        h = np.right_shift(kc, pos_bits, out=scratch.get("h", m)) if pos_bits else kc
        pos = np.bitwise_and(kc, pos_mask, out=scratch.get("pos", m)) if gathers else None
        j1 = j + int(np.searchsorted(repeats[j:j + m], c1))
        if j1 == j:
            np.bitwise_and(h, col_mask, out=indices[e:e + m], casting="unsafe")
            for src, dst in gathers:
                _take_into(src, pos, dst[e:e + m], scratch)
            e += m
            continue
        keep = scratch.get("keep", m, bool)
        keep.fill(True)
        keep[repeats[j:j1] - c0] = False
        slot = np.cumsum(keep, dtype=np.int64, out=scratch.get("slot", m))
        slot += e - 1
        col = np.bitwise_and(h, col_mask, out=scratch.get("col", m, indices.dtype), casting="unsafe")
        indices[slot] = col
        for src, dst in gathers:
            vals = scratch.get("vals", m, dst.dtype)
            _take_into(src, pos, vals, scratch)
            dst[slot] = vals
        e += m - (j1 - j)
        j = j1


def _merge_runs(key: np.ndarray, repeats: np.ndarray, pos_bits: int, attrs: list) -> None:
    """Merge each run of repeated edges into the sorted attribute arrays (``attrs``: (column,
    output, ufunc, accumulator dtype or None)): the run's values in input order, reduced with
    ``ufunc.reduceat`` in the accumulator dtype, stored at the run's slot. The same values in the
    same order as ``_Runs.merge`` (the whole-array kernel), so the same results bit for bit."""
    follows = np.zeros(repeats.shape[0], dtype=bool)
    follows[1:] = repeats[1:] - 1 == repeats[:-1]
    starts = repeats[~follows] - 1  # the kept edge before each run of repeats
    members = np.sort(np.concatenate([starts, repeats]))
    first = np.searchsorted(members, starts)
    target = starts - np.searchsorted(repeats, starts)  # repeats dropped before each start
    pos = key[members] & ((1 << pos_bits) - 1)
    for src, dst, op, acc in attrs:
        vals = np.full(members.shape[0], src[0], dtype=src.dtype) if _is_constant(src) else src[pos]
        if acc is not None:
            vals = vals.astype(acc)
        dst[target] = op.reduceat(vals, first)


def _sorted_direction(rows: np.ndarray, cols: np.ndarray, num_rows: int, col_bits: int,
                      edge_bits: int, weights: np.ndarray | None, timestamps: np.ndarray | None,
                      idx_dtype: np.dtype):
    """One CSR direction: sort edges by (row, col, original position), merge repeats, index.

    Every edge becomes the int64 ``(row << col_bits | col) << edge_bits | position``; the keys
    are unique, so the (unstable, SIMD) ``ndarray.sort`` orders edges exactly as a stable sort by
    (row, col) would, and the low bits give the permutation for the edge attributes. Repeated
    (row, col) pairs are then adjacent: their weights are summed in float64 in original order
    and their earliest timestamp kept. ``edge_bits`` is 0 when the packed key would not fit in
    ``_KEY_BITS`` (then ``_sorted_direction_whole`` takes a stable argsort of ``row << col_bits |
    col``) or when no attribute needs gathering (none, or constant ones).

    Memory: the key (8 bytes an edge) and the outputs, nothing else of size E: the key is built,
    scanned for repeats and unpacked into the outputs a chunk (``_CHUNK``) at a time, attributes
    gathered straight into the outputs; indptr counts the rows (``bincount``) less the repeats.

    Returns (indptr int64 [num_rows + 1], indices idx_dtype [E'], weights float32 [E'] | None,
    timestamps int64 [E'] | None, num_duplicates).
    """
    spec = [(v, dt, op, acc) for v, dt, op, acc in ((weights, np.float32, np.add, np.float64),
                                                    (timestamps, np.int64, np.minimum, None))
            if v is not None]
    gathered = [v for v, *_ in spec if not _is_constant(v)]
    if gathered and not edge_bits:
        return _sorted_direction_whole(rows, cols, num_rows, col_bits, edge_bits, weights,
                                       timestamps, idx_dtype)
    n = rows.shape[0]
    scratch = _Scratch()
    key = _empty(n, np.int64)
    _fill_keys(rows, cols, key, col_bits + edge_bits, edge_bits, edge_bits > 0, scratch)
    key.sort()
    repeats = _scan_repeats(key, edge_bits, scratch)
    num_dup = int(repeats.shape[0])
    num_kept = n - num_dup
    indices = _empty(num_kept, idx_dtype)
    outs = [_empty(num_kept, dt) for _, dt, _, _ in spec]
    for (v, *_), out in zip(spec, outs):
        if _is_constant(v):
            out.fill(v[0])
    _extract(key, repeats, col_bits, edge_bits, indices,
             [(v, out) for (v, *_), out in zip(spec, outs) if not _is_constant(v)], scratch)
    del scratch
    counts = np.bincount(rows, minlength=num_rows)
    if num_dup:
        _merge_runs(key, repeats, edge_bits,
                    [(v, out, op, acc) for (v, _, op, acc), out in zip(spec, outs)])
        counts -= np.bincount(key[repeats] >> (col_bits + edge_bits), minlength=num_rows)
    del key
    indptr = np.empty(num_rows + 1, dtype=np.int64)
    indptr[0] = 0
    np.cumsum(counts, out=indptr[1:])
    out_w = outs.pop(0) if weights is not None else None
    out_t = outs.pop(0) if timestamps is not None else None
    return indptr, indices, out_w, out_t, num_dup


def _sorted_direction_whole(rows: np.ndarray, cols: np.ndarray, num_rows: int, col_bits: int,
                      edge_bits: int, weights: np.ndarray | None, timestamps: np.ndarray | None,
                      idx_dtype: np.dtype):
    """One CSR direction on whole arrays (``_sorted_direction`` does the same a chunk at a time):
    sort edges by (row, col, original position), merge repeats, index. Used when the positions do
    not fit beside (row, col) in the key (then a stable argsort gives the order); the tests
    compare the chunked kernel with it bit for bit.

    Every edge becomes the int64 ``(row << col_bits | col) << edge_bits | position``; the keys
    are unique, so the (unstable, SIMD) ``ndarray.sort`` orders edges exactly as a stable sort by
    (row, col) would, and the low bits give the permutation for the edge attributes. Repeated
    (row, col) pairs are then adjacent: their weights are summed in float64 in original order
    and their earliest timestamp kept (``_Runs``). ``edge_bits`` is 0 when the packed key would
    not fit in ``_KEY_BITS``: then a stable argsort of ``row << col_bits | col`` gives the order.
    Without attributes no order is needed and the key alone is sorted.

    Returns (indptr int64 [num_rows + 1], indices idx_dtype [E'], weights float32 [E'] | None,
    timestamps int64 [E'] | None, num_duplicates).
    """
    n = rows.shape[0]
    key = np.left_shift(rows, col_bits)  # every step in place: no temporaries of size E
    key |= cols
    order = None
    if edge_bits:
        key <<= edge_bits
        order = np.arange(n, dtype=np.int64)
        key |= order
        key.sort()
        np.bitwise_and(key, (1 << edge_bits) - 1, out=order)  # the buffer is reused
        key >>= edge_bits
    elif (weights is not None and not _is_constant(weights)) or (
            timestamps is not None and not _is_constant(timestamps)):
        order = np.argsort(key, kind="stable")  # positions do not fit beside the key
        key = key[order]
    else:  # no attribute, or only constant ones: the order is not needed
        key.sort()
    # key: (row << col_bits) | col, ascending; repeats adjacent. Attributes are gathered first
    # so that the order (8 bytes an edge) is freed before the other arrays are made.
    if weights is not None:
        weights = _gather(weights, order)
    if timestamps is not None:
        timestamps = _gather(timestamps, order)
    del order
    indices = np.bitwise_and(key, (1 << col_bits) - 1, out=np.empty(n, dtype=idx_dtype),
                             casting="unsafe")
    indptr = np.searchsorted(key, np.arange(num_rows + 1, dtype=np.int64) << col_bits)
    dup = key[1:] == key[:-1]
    del key
    num_dup = int(np.count_nonzero(dup))
    if num_dup:
        runs = _Runs(dup)
        del dup
        indices = indices[runs.keep]
        indptr -= np.searchsorted(runs.repeats, indptr)  # repeats dropped before each row start
        if weights is not None:  # float64 sums (weights arrive float32, or float64 as given)
            weights = runs.merge(weights, np.add, np.float64)
        if timestamps is not None:
            timestamps = runs.merge(timestamps, np.minimum)
        del runs
    if weights is not None:
        weights = weights.astype(np.float32, copy=False)
    return indptr, indices, weights, timestamps, num_dup


def sort_direction(rows: np.ndarray, cols: np.ndarray, num_rows: int, num_cols: int,
                   weights: np.ndarray | None, timestamps: np.ndarray | None, idx_dtype: np.dtype):
    """One direction of an edge list through the packed-key kernel (``_sorted_direction``):
    ``(indptr, indices, weights, timestamps, num_duplicates)`` with rows in ``[0, num_rows)``.

    The edge positions are packed into the key when there are weights or timestamps and
    ``bits(rows) + bits(cols) + bits(E)`` fits in the 63-bit key; otherwise the key holds
    (row, col) only and a stable argsort gives the order. Both give the same arrays. Used by the
    out-of-core build (``graph.external_build``) on each group of rows.
    """
    row_bits, col_bits, edge_bits = _bits(num_rows), _bits(num_cols), _bits(rows.shape[0])
    if row_bits + col_bits > _KEY_BITS:  # pragma: no cover - needs > 2^63 (row, col) pairs
        raise NotImplementedError(f"{num_rows} x {num_cols} ids do not pack into a 63-bit key")
    if (weights is None and timestamps is None) or row_bits + col_bits + edge_bits > _KEY_BITS:
        edge_bits = 0
    return _sorted_direction(rows, cols, num_rows, col_bits, edge_bits, weights, timestamps, idx_dtype)


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

    Each direction sorts one int64 key per edge (see ``_sorted_direction``): ``pin, board``
    and, when there are weights or timestamps, the edge's position packed in the low bits, as
    long as ``bits(P) + bits(B) + bits(E) <= 63`` (1M pins, 100k boards, 10M edges: 20 + 17 + 24
    = 61); a larger graph with attributes takes a stable argsort of the key instead. The two
    directions run on two threads. Id spaces over 63 bits (and empty edge lists) take
    ``_build_by_argsort``. Every path gives identical arrays.
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
    pin_bits, board_bits, edge_bits = _bits(num_pins), _bits(num_boards), _bits(n)
    if n and pin_bits + board_bits <= _KEY_BITS:
        weights, timestamps = _constant_as_broadcast(weights), _constant_as_broadcast(timestamps)
        need_order = any(v is not None and not _is_constant(v) for v in (weights, timestamps))
        if not need_order or pin_bits + board_bits + edge_bits > _KEY_BITS:
            edge_bits = 0  # no positions in the key
        args_pin = (pins, boards, num_pins, board_bits, edge_bits, weights, timestamps, idx_dtype)
        args_board = (boards, pins, num_boards, pin_bits, edge_bits, weights, timestamps, idx_dtype)
        if n >= _PARALLEL_MIN_EDGES and (os.cpu_count() or 1) > 1:
            # numpy releases the GIL in sorts and ufunc loops: the directions run concurrently.
            with ThreadPoolExecutor(max_workers=1) as pool:
                by_board = pool.submit(_sorted_direction, *args_board)
                pin_indptr, pin_indices, pin_w, pin_t, num_dup = _sorted_direction(*args_pin)
                board_indptr, board_indices, board_w, board_t, _ = by_board.result()
        else:
            pin_indptr, pin_indices, pin_w, pin_t, num_dup = _sorted_direction(*args_pin)
            board_indptr, board_indices, board_w, board_t, _ = _sorted_direction(*args_board)
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
