"""One CSR direction of an edge list: sort by (row, col), merge repeated edges, index the rows.

The kernel of ``graph.csr.build_bipartite_csr`` (both directions) and of the out-of-core build
(``sort_direction`` per group of rows). Plain numpy on host memory; every path gives identical
arrays (``tests/graph/test_csr.py`` checks them bit for bit against each other and a reference).
"""
from __future__ import annotations

import ctypes
import functools
import mmap

import numpy as np

__all__ = ["KEY_BITS", "CHUNK", "POPULATE_MIN_BYTES", "bits", "Runs", "is_constant", "gather",
           "constant_as_broadcast", "empty_prefaulted", "arange_prefaulted", "sorted_direction",
           "sorted_direction_whole", "sort_direction"]

# Bits of a non-negative int64 sort key (a test lowers it to exercise the argsort fallbacks).
KEY_BITS = 63


def bits(n: int) -> int:
    """Number of bits that hold every value of ``[0, n)`` (at least 1)."""
    return max(int(n - 1).bit_length(), 1)


class Runs:
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


def is_constant(values: np.ndarray | None) -> bool:
    return values is not None and values.strides == (0,)


def gather(values: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """``values[order]``; a constant column (a stride-0 broadcast) is filled, not gathered."""
    if is_constant(values):
        return np.full(values.shape[0], values[0], dtype=values.dtype)
    return values.take(order)


# constant_as_broadcast looks at this many leading values before reading the whole column.
_CONSTANT_PROBE = 4096


def constant_as_broadcast(values: np.ndarray | None) -> np.ndarray | None:
    """A column whose values are all equal (all 1.0 weights, say) as a stride-0 view of one.

    Equal means equal bit patterns (compared as unsigned integers), so 0.0 and -0.0 differ.
    """
    if values is None or values.shape[0] < 2 or is_constant(values):
        return values
    raw = values.view(np.dtype(f"u{values.dtype.itemsize}"))
    if (raw[:_CONSTANT_PROBE] != raw[0]).any():   # varies early (most columns): no full pass
        return values
    if raw.min() == raw.max():
        return np.broadcast_to(values[:1], values.shape)
    return values


# Arrays of at least this many bytes are allocated pre-faulted (``empty_prefaulted``); a test lowers it.
POPULATE_MIN_BYTES = 1 << 22


# madvise(2) advice that faults a range in for writing (Linux 5.14+); ``empty_prefaulted`` with
# a pool uses it so the faults of one array run on several threads.
MADV_POPULATE_WRITE = 23


@functools.lru_cache(maxsize=None)
def _libc_madvise():
    """libc's ``madvise`` through ctypes (which releases the GIL during the call), or None."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc
        return None
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise


def empty_prefaulted(n: int, dtype, pool=None, parts: int = 1) -> np.ndarray:
    """``np.empty(n, dtype)``; a large one comes from an anonymous ``mmap`` with
    ``MAP_POPULATE``, which faults all its pages in one call (Linux), or, given a thread
    ``pool`` and ``parts`` > 1, from one ``madvise(MADV_POPULATE_WRITE)`` per part of the
    mapping on the pool's threads (160 MB in 26 ms on two threads against 48 ms in one call on
    the development VM, ``benchmarks/bench_build_phases.py``; where the kernel lacks that advice
    the pages fault in on first write).

    Memory a process touches for the first time is the dominant cost of a build on the
    development VM, and varies a lot: 320 MB in fresh processes, interleaved, took 0.12 s
    (0.12 to 0.40) of system time pre-faulted this way, against 0.23 s (0.12 to 2.0) page by page
    in 4 KiB pages and 0.55 s (0.03 to 2.1) in the transparent huge pages numpy asks for. The
    array is a writeable view of the mapping (``base`` holds it; it is unmapped with the last
    reference), otherwise the same as ``np.empty``'s.
    """
    dtype = np.dtype(dtype)
    nbytes = n * dtype.itemsize
    if nbytes < max(POPULATE_MIN_BYTES, 1) or not hasattr(mmap, "MAP_POPULATE"):
        return np.empty(n, dtype=dtype)
    madvise = _libc_madvise() if pool is not None and parts > 1 else None
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | (0 if madvise else mmap.MAP_POPULATE)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except (OSError, ValueError):  # pragma: no cover - e.g. a mapping limit: plain allocation
        return np.empty(n, dtype=dtype)
    array = np.frombuffer(buf, dtype=dtype, count=n)
    if madvise:
        page = mmap.PAGESIZE
        pages = -(-nbytes // page)
        cuts = [pages * i // parts * page for i in range(parts + 1)]
        address = array.ctypes.data
        list(pool.map(lambda i: madvise(address + cuts[i], cuts[i + 1] - cuts[i], MADV_POPULATE_WRITE),
                      range(parts)))
    return array


def arange_prefaulted(n: int) -> np.ndarray:
    """``np.arange(n)`` (int64) in an ``empty_prefaulted`` array, filled a slice at a time: a
    large ``np.arange`` asks for transparent huge pages and, the first time a process touches
    them, stalled 25 to 42 ms for 8 MB in some fresh processes on the development VM (1 to 3 ms
    otherwise; ad-hoc timings of ``PinBoardGraph.from_edges``)."""
    ids = empty_prefaulted(n, np.int64)
    step = 1 << 16
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        ids[lo:hi] = np.arange(lo, hi, dtype=np.int64)
    return ids


# Edges per chunk in the passes of ``sorted_direction``: a chunk's temporaries (int64 buffers
# of this length, allocated once per direction and reused) stay in the core's cache. A test
# lowers it to put runs of repeats across chunk boundaries.
CHUNK = 1 << 16


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
            buf = self._bufs[k] = np.empty(max(m, CHUNK), dtype=dtype)
        return buf[:m]

    def positions(self, m: int) -> np.ndarray:
        """``arange(m)`` (int64), to be read only."""
        ar = self._bufs.get(("arange", ""))
        if ar is None or ar.shape[0] < m:
            ar = self._bufs[("arange", "")] = np.arange(max(m, CHUNK), dtype=np.int64)
        return ar[:m]


def _fill_keys(rows: np.ndarray, cols: np.ndarray, key: np.ndarray, row_shift: int,
               col_shift: int, with_pos: bool, scratch: _Scratch) -> None:
    """``key[:] = rows << row_shift | cols << col_shift [| position]``, a chunk at a time."""
    for c0 in range(0, key.shape[0], CHUNK):
        c1 = min(c0 + CHUNK, key.shape[0])
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
    for c0 in range(0, key.shape[0], CHUNK):
        c1 = min(c0 + CHUNK, key.shape[0])
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
    for c0 in range(0, key.shape[0], CHUNK):
        c1 = min(c0 + CHUNK, key.shape[0])
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
    same order as ``Runs.merge`` (the whole-array kernel), so the same results bit for bit."""
    follows = np.zeros(repeats.shape[0], dtype=bool)
    follows[1:] = repeats[1:] - 1 == repeats[:-1]
    starts = repeats[~follows] - 1  # the kept edge before each run of repeats
    members = np.sort(np.concatenate([starts, repeats]))
    first = np.searchsorted(members, starts)
    target = starts - np.searchsorted(repeats, starts)  # repeats dropped before each start
    pos = key[members] & ((1 << pos_bits) - 1)
    for src, dst, op, acc in attrs:
        vals = np.full(members.shape[0], src[0], dtype=src.dtype) if is_constant(src) else src[pos]
        if acc is not None:
            vals = vals.astype(acc)
        dst[target] = op.reduceat(vals, first)


def sorted_direction(rows: np.ndarray, cols: np.ndarray, num_rows: int, col_bits: int,
                      edge_bits: int, weights: np.ndarray | None, timestamps: np.ndarray | None,
                      idx_dtype: np.dtype):
    """One CSR direction: sort edges by (row, col, original position), merge repeats, index.

    Every edge becomes the int64 ``(row << col_bits | col) << edge_bits | position``; the keys
    are unique, so the (unstable, SIMD) ``ndarray.sort`` orders edges exactly as a stable sort by
    (row, col) would, and the low bits give the permutation for the edge attributes. Repeated
    (row, col) pairs are then adjacent: their weights are summed in float64 in original order
    and their earliest timestamp kept. ``edge_bits`` is 0 when the packed key would not fit in
    ``KEY_BITS`` (then ``sorted_direction_whole`` takes a stable argsort of ``row << col_bits |
    col``) or when no attribute needs gathering (none, or constant ones).

    Memory: the key (8 bytes an edge) and the outputs, nothing else of size E: the key is built,
    scanned for repeats and unpacked into the outputs a chunk (``CHUNK``) at a time, attributes
    gathered straight into the outputs; indptr counts the rows (``bincount``) less the repeats.

    Returns (indptr int64 [num_rows + 1], indices idx_dtype [E'], weights float32 [E'] | None,
    timestamps int64 [E'] | None, num_duplicates).
    """
    spec = [(v, dt, op, acc) for v, dt, op, acc in ((weights, np.float32, np.add, np.float64),
                                                    (timestamps, np.int64, np.minimum, None))
            if v is not None]
    gathered = [v for v, *_ in spec if not is_constant(v)]
    if gathered and not edge_bits:
        return sorted_direction_whole(rows, cols, num_rows, col_bits, edge_bits, weights,
                                       timestamps, idx_dtype)
    n = rows.shape[0]
    scratch = _Scratch()
    key = empty_prefaulted(n, np.int64)
    _fill_keys(rows, cols, key, col_bits + edge_bits, edge_bits, edge_bits > 0, scratch)
    key.sort()
    repeats = _scan_repeats(key, edge_bits, scratch)
    num_dup = int(repeats.shape[0])
    num_kept = n - num_dup
    indices = empty_prefaulted(num_kept, idx_dtype)
    outs = [empty_prefaulted(num_kept, dt) for _, dt, _, _ in spec]
    for (v, *_), out in zip(spec, outs):
        if is_constant(v):
            out.fill(v[0])
    _extract(key, repeats, col_bits, edge_bits, indices,
             [(v, out) for (v, *_), out in zip(spec, outs) if not is_constant(v)], scratch)
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


def sorted_direction_whole(rows: np.ndarray, cols: np.ndarray, num_rows: int, col_bits: int,
                      edge_bits: int, weights: np.ndarray | None, timestamps: np.ndarray | None,
                      idx_dtype: np.dtype):
    """One CSR direction on whole arrays (``sorted_direction`` does the same a chunk at a time):
    sort edges by (row, col, original position), merge repeats, index. Used when the positions do
    not fit beside (row, col) in the key (then a stable argsort gives the order); the tests
    compare the chunked kernel with it bit for bit.

    Every edge becomes the int64 ``(row << col_bits | col) << edge_bits | position``; the keys
    are unique, so the (unstable, SIMD) ``ndarray.sort`` orders edges exactly as a stable sort by
    (row, col) would, and the low bits give the permutation for the edge attributes. Repeated
    (row, col) pairs are then adjacent: their weights are summed in float64 in original order
    and their earliest timestamp kept (``Runs``). ``edge_bits`` is 0 when the packed key would
    not fit in ``KEY_BITS``: then a stable argsort of ``row << col_bits | col`` gives the order.
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
    elif (weights is not None and not is_constant(weights)) or (
            timestamps is not None and not is_constant(timestamps)):
        order = np.argsort(key, kind="stable")  # positions do not fit beside the key
        key = key[order]
    else:  # no attribute, or only constant ones: the order is not needed
        key.sort()
    # key: (row << col_bits) | col, ascending; repeats adjacent. Attributes are gathered first
    # so that the order (8 bytes an edge) is freed before the other arrays are made.
    if weights is not None:
        weights = gather(weights, order)
    if timestamps is not None:
        timestamps = gather(timestamps, order)
    del order
    indices = np.bitwise_and(key, (1 << col_bits) - 1, out=np.empty(n, dtype=idx_dtype),
                             casting="unsafe")
    indptr = np.searchsorted(key, np.arange(num_rows + 1, dtype=np.int64) << col_bits)
    dup = key[1:] == key[:-1]
    del key
    num_dup = int(np.count_nonzero(dup))
    if num_dup:
        runs = Runs(dup)
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
    """One direction of an edge list through the packed-key kernel (``sorted_direction``):
    ``(indptr, indices, weights, timestamps, num_duplicates)`` with rows in ``[0, num_rows)``.

    The edge positions are packed into the key when there are weights or timestamps and
    ``bits(rows) + bits(cols) + bits(E)`` fits in the 63-bit key; otherwise the key holds
    (row, col) only and a stable argsort gives the order. Both give the same arrays. Used by the
    out-of-core build (``graph.external_build``) on each group of rows.
    """
    row_bits, col_bits, edge_bits = bits(num_rows), bits(num_cols), bits(rows.shape[0])
    if row_bits + col_bits > KEY_BITS:  # pragma: no cover - needs > 2^63 (row, col) pairs
        raise NotImplementedError(f"{num_rows} x {num_cols} ids do not pack into a 63-bit key")
    if (weights is None and timestamps is None) or row_bits + col_bits + edge_bits > KEY_BITS:
        edge_bits = 0
    return sorted_direction(rows, cols, num_rows, col_bits, edge_bits, weights, timestamps, idx_dtype)
