"""Both CSR directions of an edge list in one compiled pass per phase (numba), split over threads.

The same arrays as ``graph.csr_direction.sorted_direction`` run on each direction, bit for bit
(``tests/graph/test_csr_compiled.py``), by a different algorithm:

1. ``_histogram``: each thread counts its share of the edges into a coarse histogram of pin ids
   (``pin >> shift``, at most ``HIST_BINS`` bins: it stays in L1), so the pins can be cut into
   one contiguous range per thread holding about the same number of edges;
2. ``_fill_keys``: each thread packs its edges into int64 keys ``(pin, board, position)`` (as
   ``sorted_direction`` does) and writes each key into the part of the key array of its pin
   range;
3. each part is sorted on its own thread (``ndarray.sort`` releases the GIL) and scanned for
   repeated (pin, board) pairs (``_count_repeats``), which gives every part's output offset;
4. ``_extract``: each thread unpacks its part into the pin-major outputs: boards, weights
   gathered by position (repeats summed in float64 with numpy's pairwise order, so the same
   bits as ``np.add.reduceat``), earliest timestamps, the indptr of its pins, and a count of
   edges per board;
5. ``_scatter``: the board-major direction is a counting sort of the pin-major one, no second
   sort and no second gather: each thread walks its pins in order and writes each edge at its
   board's cursor (per-thread cursors from the board counts), so pins come out ascending within
   each board.

Why: the numpy kernel pays, per direction, a sort of 10M int64 keys and a random gather of the
weights, and the directions can only share two threads by running side by side; here there is
one sort, split over the threads, and the board direction comes from a sequential read of the
pin direction with cursors that fit in cache (benchmarks/RESULTS.md, "Graph build").

numba is imported on first use (``available()``), like ``sampling.fanout_kernels``; without it,
or when the positions do not fit beside (pin, board) in a key, ``graph.csr`` runs the numpy
kernel, which gives the same arrays.
"""
from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from graph.csr_direction import bits, empty_prefaulted, is_constant

__all__ = ["available", "set_enabled", "enabled", "loaded", "warm_up", "threads_for", "HIST_BINS", "MAX_THREADS",
           "BLOCK", "build_both_directions"]

_ENABLED = True
_LOADED = False  # a compiled build has run in this process
# Bins of the coarse pin histogram that cuts the pins into thread ranges (int64 counts: 32 KiB).
HIST_BINS = 4096
# Threads of the compiled build (each adds a key part, a histogram and B board counts).
MAX_THREADS = 8


@functools.lru_cache(maxsize=None)
def _compiled() -> SimpleNamespace | None:
    """The jitted kernels, made on first use (importing numba costs 0.2-0.3 s, so ``import
    graph`` does not pay it); None when numba does not import."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; a broken install falls back
        return None
    global _value, _block_sum, _run_sum
    jit = numba.njit(cache=True, nogil=True)
    # ``_extract`` calls these through this module's globals, which must be the compiled
    # functions when it is compiled.
    _value, _block_sum, _run_sum = jit(_value), jit(_block_sum), jit(_run_sum)
    return SimpleNamespace(histogram=jit(_histogram), fill_keys=jit(_fill_keys),
                           count_repeats=jit(_count_repeats), extract=jit(_extract),
                           scatter=jit(_scatter))


def available() -> bool:
    """Whether the compiled build can run here (imports numba on the first call)."""
    return _compiled() is not None


def set_enabled(on: bool) -> None:
    """Use the compiled build where it applies (default), or the numpy kernel always
    (``False``; both give the same arrays)."""
    global _ENABLED
    _ENABLED = bool(on)


def loaded() -> bool:
    """Whether a compiled build (``warm_up`` included) has run in this process: numba and the
    kernels are loaded, so the next build pays none of their start."""
    return _LOADED


def enabled() -> bool:
    """Whether ``graph.csr`` uses the compiled build: enabled and numba importable."""
    return _ENABLED and available()


def warm_up() -> None:
    """Import numba and load (or compile, the first time on a machine) the kernels for float32
    weights and int32 indices, the types of a typical build, by building a three-edge graph.

    What a process pays once before its first compiled build (about 0.55 s on the development
    VM: numba's import and LLVM's start, shared with ``sampling.fanout_kernels``); benchmarks
    time it apart from the build. Does nothing without numba."""
    if not available():
        return
    pins = np.array([0, 1, 1], dtype=np.int64)
    boards = np.array([1, 0, 0], dtype=np.int64)
    build_both_directions(pins, boards, 2, 2, np.ones(3, dtype=np.float32), None, np.dtype(np.int32),
                          bits(3), threads=1)


# ------------------------------------------------------------------------------ kernels
# Plain Python, compiled by ``_compiled``; the tests run the compiled versions.

def _histogram(pins, lo, hi, shift, hist):  # pragma: no cover - compiled
    """hist[pins[e] >> shift] += 1 for e in [lo, hi). pins int64 [E]; hist int64 [bins]."""
    for e in range(lo, hi):
        hist[pins[e] >> shift] += 1


def _fill_keys(pins, boards, lo, hi, shift, part_of_bin, cursor, key, board_bits, pos_bits):  # pragma: no cover
    """Keys ``(pin << board_bits | board) << pos_bits | e`` of edges [lo, hi), each written at
    the cursor of its pin's part (``part_of_bin[pin >> shift]``; cursor int64 [parts], advanced).
    ``pos_bits`` 0: no position in the key."""
    for e in range(lo, hi):
        p = pins[e]
        k = ((p << board_bits) | boards[e]) << pos_bits
        if pos_bits:
            k |= e
        part = part_of_bin[p >> shift]
        key[cursor[part]] = k
        cursor[part] += 1


def _count_repeats(key, lo, hi, pos_bits):  # pragma: no cover - compiled
    """Number of keys in the sorted key[lo:hi] whose (pin, board) equals the previous key's."""
    n = 0
    for i in range(lo + 1, hi):
        if (key[i] >> pos_bits) == (key[i - 1] >> pos_bits):
            n += 1
    return n


def _value(values, key, at, pos_mask, step):  # pragma: no cover - compiled
    """float64 of the attribute of the sorted edge ``at``: ``values[key[at] & pos_mask]``, or
    ``values[0]`` for a constant column (``step`` 0)."""
    return np.float64(values[(key[at] & pos_mask) * step])


def _block_sum(values, key, lo, n, pos_mask, step):  # pragma: no cover - compiled
    """numpy's pairwise sum (``DOUBLE_pairwise_sum``) of the float64 attributes of the sorted
    edges lo..lo + n - 1 (``_value``), n <= 128: below 8 values a plain loop from -0.0,
    otherwise eight accumulators, then the rest."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += _value(values, key, i, pos_mask, step)
        return res
    r0, r1 = _value(values, key, lo, pos_mask, step), _value(values, key, lo + 1, pos_mask, step)
    r2, r3 = _value(values, key, lo + 2, pos_mask, step), _value(values, key, lo + 3, pos_mask, step)
    r4, r5 = _value(values, key, lo + 4, pos_mask, step), _value(values, key, lo + 5, pos_mask, step)
    r6, r7 = _value(values, key, lo + 6, pos_mask, step), _value(values, key, lo + 7, pos_mask, step)
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += _value(values, key, lo + i, pos_mask, step)
        r1 += _value(values, key, lo + i + 1, pos_mask, step)
        r2 += _value(values, key, lo + i + 2, pos_mask, step)
        r3 += _value(values, key, lo + i + 3, pos_mask, step)
        r4 += _value(values, key, lo + i + 4, pos_mask, step)
        r5 += _value(values, key, lo + i + 5, pos_mask, step)
        r6 += _value(values, key, lo + i + 6, pos_mask, step)
        r7 += _value(values, key, lo + i + 7, pos_mask, step)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += _value(values, key, lo + i, pos_mask, step)
        i += 1
    return res


def _run_sum(values, key, lo, hi, pos_mask, step):  # pragma: no cover - compiled
    """The float64 sum of the attributes of the sorted edges [lo, hi) (a run of repeats) as
    ``np.add.reduceat`` gives it: the first value plus numpy's pairwise sum of the rest (blocks
    of at most 128, ``_block_sum``; above, halves cut at a multiple of 8). numpy recurses; this
    walks the same tree with an explicit stack (numba caches no recursive functions)."""
    first = _value(values, key, lo, pos_mask, step)
    lo += 1
    n = hi - lo
    if n <= 128:
        return first + _block_sum(values, key, lo, n, pos_mask, step)
    frame_lo = np.empty(64, np.int64)  # depth <= log2(n / 64) + 1
    frame_n = np.empty(64, np.int64)
    frame_stage = np.empty(64, np.int64)
    sums = np.empty(64, np.float64)
    top = 0
    num_sums = 0
    frame_lo[0], frame_n[0], frame_stage[0] = lo, n, 0
    while top >= 0:
        f_lo, f_n = frame_lo[top], frame_n[top]
        if f_n <= 128:
            sums[num_sums] = _block_sum(values, key, f_lo, f_n, pos_mask, step)
            num_sums += 1
            top -= 1
            continue
        half = f_n // 2
        half -= half % 8
        stage = frame_stage[top]
        frame_stage[top] = stage + 1
        if stage == 0:  # left half
            top += 1
            frame_lo[top], frame_n[top], frame_stage[top] = f_lo, half, 0
        elif stage == 1:  # right half
            top += 1
            frame_lo[top], frame_n[top], frame_stage[top] = f_lo + half, f_n - half, 0
        else:  # both done: left + right
            num_sums -= 1
            sums[num_sums - 1] = sums[num_sums - 1] + sums[num_sums]
            top -= 1
    return first + sums[0]


# Keys per block of ``_extract``: the attributes of a block are gathered into a buffer that
# stays in L1 before the block is unpacked.
BLOCK = 512


def _extract(key, lo, hi, pos_bits, board_bits, pin_lo, pin_hi, out_at, indptr, indices,
             w_in, w_mode, w_out, t_in, t_mode, t_out, board_counts):  # pragma: no cover
    """Unpack the sorted key[lo:hi] (the pins [pin_lo, pin_hi)) into the pin-major outputs
    from ``out_at``: one entry per (pin, board) run. indices[o] = board; w_out[o] (float32)
    = the run's weights summed in float64 in position order, pairwise as numpy sums;
    t_out[o] = the run's earliest timestamp; indptr[p + 1] for p in [pin_lo, pin_hi);
    board_counts[board] += 1. ``w_mode``/``t_mode``: 0 none, 1 constant (``x_in[0]``), 2
    per edge (``x_in[position]``, the position in the key's low ``pos_bits``).

    Per-edge attributes are read a block (``BLOCK`` keys) at a time by a loop without branches
    into a small buffer: in the branchy unpacking loop the CPU keeps few of these random reads
    in flight (0.35 s against 0.07 s for 10M edges on the development VM). Runs of repeats,
    rare, read their values straight from the inputs."""
    pos_mask = (1 << pos_bits) - 1
    board_mask = (1 << board_bits) - 1
    w_buf = np.empty(BLOCK, w_in.dtype)
    t_buf = np.empty(BLOCK, t_in.dtype)
    o = out_at
    p = pin_lo
    i = lo
    while i < hi:
        block = i
        stop = min(i + BLOCK, hi)
        if w_mode == 2:
            for m in range(block, stop):
                w_buf[m - block] = w_in[key[m] & pos_mask]
        if t_mode == 2:
            for m in range(block, stop):
                t_buf[m - block] = t_in[key[m] & pos_mask]
        while i < stop:
            h = key[i] >> pos_bits
            pin = h >> board_bits
            while p < pin:
                indptr[p + 1] = o
                p += 1
            j = i + 1
            while j < hi and (key[j] >> pos_bits) == h:
                j += 1
            b = h & board_mask
            indices[o] = b
            board_counts[b] += 1
            if j - i == 1:
                if w_mode == 2:
                    w_out[o] = w_buf[i - block]
                elif w_mode == 1:
                    w_out[o] = w_in[0]
                if t_mode == 2:
                    t_out[o] = t_buf[i - block]
                elif t_mode == 1:
                    t_out[o] = t_in[0]
            else:
                if w_mode:
                    w_out[o] = _run_sum(w_in, key, i, j, pos_mask, 1 if w_mode == 2 else 0)
                if t_mode == 1:
                    t_out[o] = t_in[0]
                elif t_mode == 2:
                    t = t_in[key[i] & pos_mask]
                    for m in range(i + 1, j):
                        t = min(t, t_in[key[m] & pos_mask])
                    t_out[o] = t
            o += 1
            i = j
    while p < pin_hi:
        indptr[p + 1] = o
        p += 1


def _scatter(pin_lo, pin_hi, pin_indptr, pin_indices, pin_w, pin_t, w_mode, t_mode, cursor,
             board_indices, board_w, board_t):  # pragma: no cover - compiled
    """Counting sort of the pin-major rows [pin_lo, pin_hi) into the board-major arrays: every
    edge (pin, board) goes to ``cursor[board]`` (int64 [B], advanced), pins in ascending order."""
    for p in range(pin_lo, pin_hi):
        for j in range(pin_indptr[p], pin_indptr[p + 1]):
            b = pin_indices[j]
            at = cursor[b]
            board_indices[at] = p
            if w_mode:
                board_w[at] = pin_w[j]
            if t_mode:
                board_t[at] = pin_t[j]
            cursor[b] = at + 1


# ------------------------------------------------------------------------------ driver
def _mode(values: np.ndarray | None) -> int:
    return 0 if values is None else 1 if is_constant(values) else 2


def _column(values: np.ndarray | None, dtype) -> np.ndarray:
    """The array a kernel reads: the values, their first one when constant, or a stand-in."""
    if values is None:
        return np.zeros(1, dtype=dtype)
    return np.ascontiguousarray(values[:1]) if is_constant(values) else values


def threads_for(num_edges: int, num_boards: int) -> int:
    """Threads of the compiled build: the CPUs this process may use, at most ``MAX_THREADS``,
    one per 2^18 edges (fewer for small graphs: the per-thread tables would dominate), and no
    more than edges per board (each thread counts its edges per board in an int64 [B] table,
    which must stay small beside the 8-byte key per edge)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS, num_edges >> 18, num_edges // max(num_boards, 1)))


def build_both_directions(pins: np.ndarray, boards: np.ndarray, num_pins: int, num_boards: int,
                          weights: np.ndarray | None, timestamps: np.ndarray | None,
                          idx_dtype: np.dtype, pos_bits: int, threads: int | None = None):
    """Both CSR directions of validated edges (pins, boards int64 [E], E > 0).

    weights: float32/float64 [E], a stride-0 constant column, or None; timestamps: int64 [E],
    constant or None; ``pos_bits``: bits of the edge position in the key (0 when no attribute
    varies; ``bits(P) + bits(B) + pos_bits <= 63``). Returns (pin_indptr int64 [P + 1],
    pin_indices idx_dtype [E'], pin_weights float32 [E'] | None, pin_timestamps int64 [E'] |
    None, board_indptr int64 [B + 1], board_indices idx_dtype [E'], board_weights,
    board_timestamps, num_duplicates): what ``sorted_direction`` gives for each direction.
    """
    import numba

    k = _compiled()
    n = int(pins.shape[0])
    t = threads or threads_for(n, num_boards)
    board_bits = bits(num_boards)
    w_mode, t_mode = _mode(weights), _mode(timestamps)
    w_in, t_in = _column(weights, np.float32), _column(timestamps, np.int64)
    shift = max(bits(num_pins) - bits(HIST_BINS), 0)
    edge_cuts = [n * i // t for i in range(t + 1)]

    with ThreadPoolExecutor(max_workers=t) as pool:
        def each(kernel, args_of):
            """kernel(*args_of(i)) for i in range(t), one per thread. The kernel is
            compiled (or loaded from numba's cache) for these argument types on this thread
            first: numba's first dispatch from several threads at once can crash."""
            args = [args_of(i) for i in range(t)]
            kernel.compile(tuple(numba.typeof(a) for a in args[0]))
            return list(pool.map(lambda a: kernel(*a), args))

        # 1. edges per pin bin, per thread; cut the bins into t parts of about n / t edges.
        hists = np.zeros((t, HIST_BINS), dtype=np.int64)
        each(k.histogram, lambda i: (pins, edge_cuts[i], edge_cuts[i + 1], shift, hists[i]))
        upto = np.zeros((t, HIST_BINS + 1), dtype=np.int64)  # upto[i, c]: thread i's edges in bins < c
        np.cumsum(hists, axis=1, out=upto[:, 1:])
        cum = upto[:, 1:].sum(axis=0)
        bin_cuts = np.concatenate([[0], np.searchsorted(cum, [n * i / t for i in range(1, t)], side="left") + 1,
                                   [HIST_BINS]])
        bin_cuts = np.maximum.accumulate(np.minimum(bin_cuts, HIST_BINS))
        part_of_bin = np.repeat(np.arange(t, dtype=np.int64), np.diff(bin_cuts))
        pin_cuts = [min(int(c) << shift, num_pins) for c in bin_cuts]
        # edges of thread i in part r: sums of its histogram over the part's bins
        per_part = upto[:, bin_cuts[1:]] - upto[:, bin_cuts[:-1]]
        part_start = np.concatenate([[0], np.cumsum(per_part.sum(axis=0))])
        cursors = part_start[:-1][None, :] + np.cumsum(per_part, axis=0) - per_part  # [thread, part]
        cursors = np.ascontiguousarray(cursors, dtype=np.int64)

        # 2. keys into their parts
        key = empty_prefaulted(n, np.int64)
        each(k.fill_keys, lambda i: (pins, boards, edge_cuts[i], edge_cuts[i + 1], shift, part_of_bin,
                                     cursors[i], key, board_bits, pos_bits))

        # 3. sort each part; its repeats give the output offsets
        list(pool.map(lambda r: key[part_start[r]:part_start[r + 1]].sort(), range(t)))
        repeats = each(k.count_repeats, lambda r: (key, part_start[r], part_start[r + 1], pos_bits))
        num_dup = int(sum(repeats))
        kept = [int(part_start[r + 1] - part_start[r]) - repeats[r] for r in range(t)]
        out_at = np.concatenate([[0], np.cumsum(kept)])
        m = n - num_dup

        # 4. pin-major outputs
        pin_indptr = np.empty(num_pins + 1, dtype=np.int64)
        pin_indptr[0] = 0
        pin_indices = empty_prefaulted(m, idx_dtype)
        pin_w = empty_prefaulted(m, np.float32) if w_mode else np.zeros(1, np.float32)
        pin_t = empty_prefaulted(m, np.int64) if t_mode else np.zeros(1, np.int64)
        board_counts = np.zeros((t, num_boards), dtype=np.int64)
        each(k.extract, lambda r: (key, part_start[r], part_start[r + 1], pos_bits, board_bits,
                                   pin_cuts[r], pin_cuts[r + 1], out_at[r], pin_indptr, pin_indices,
                                   w_in, w_mode, pin_w, t_in, t_mode, pin_t, board_counts[r]))

        # 5. board-major outputs by counting sort
        per_board = board_counts.sum(axis=0)
        board_indptr = np.empty(num_boards + 1, dtype=np.int64)
        board_indptr[0] = 0
        np.cumsum(per_board, out=board_indptr[1:])
        board_cursor = board_indptr[:-1][None, :] + np.cumsum(board_counts, axis=0) - board_counts
        board_cursor = np.ascontiguousarray(board_cursor)
        del board_counts
        # The key (8 bytes an edge, read no more) holds the board-major indices and weights
        # when they take 8 bytes together: memory touched for the first time is a large part of
        # a build's time (graph.csr_direction.empty_prefaulted).
        if idx_dtype.itemsize + (4 if w_mode else 0) <= key.itemsize:
            board_indices = key.view(idx_dtype)[:m]
            board_w = key.view(np.float32)[m:2 * m] if w_mode else np.zeros(1, np.float32)
        else:
            board_indices = empty_prefaulted(m, idx_dtype)
            board_w = empty_prefaulted(m, np.float32) if w_mode else np.zeros(1, np.float32)
        del key
        board_t = empty_prefaulted(m, np.int64) if t_mode else np.zeros(1, np.int64)
        each(k.scatter, lambda r: (pin_cuts[r], pin_cuts[r + 1], pin_indptr, pin_indices, pin_w, pin_t,
                                   w_mode, t_mode, board_cursor[r], board_indices, board_w, board_t))

    global _LOADED
    _LOADED = True
    return (pin_indptr, pin_indices, pin_w if w_mode else None, pin_t if t_mode else None,
            board_indptr, board_indices, board_w if w_mode else None, board_t if t_mode else None,
            num_dup)
