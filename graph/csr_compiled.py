"""Both CSR directions of an edge list in one compiled pass per phase (numba), split over threads.

The same arrays as ``graph.csr_direction.sorted_direction`` run on each direction, bit for bit
(``tests/graph/test_csr_compiled.py``), by a different algorithm:

1. ``_histogram``: each thread counts its share of the edges into bins of pins (``pin >>
   shift``, about ``EDGES_PER_BIN`` edges a bin); the bins are cut into one contiguous range per
   thread holding about the same number of edges;
2. ``_fill_records``: each thread packs its edges into int64 records and writes each at the
   cursor of its pin's bin, so a bin holds its edges in edge order. A record is ``(pin's low
   shift bits, board)`` in bits 62..32 (the pin's high bits are the bin) and a 32-bit payload:
   the float32 weight's bits when the weight is the only attribute that varies (it travels with
   the record: no gather), the edge's position when another varies, else nothing;
3. ``_sort_bins``: each thread sorts its bins one at a time in the core's cache by a
   least-significant-digit radix sort of the 31 high bits, a byte a pass (stable, so repeats
   keep edge order), and counts repeated (pin, board) pairs, which gives every part's output
   offset, and the kept edges per board;
4. ``_extract``: each thread unpacks its bins into the pin-major outputs: boards, weights
   (repeats summed in float64 with numpy's pairwise order, so the same bits as
   ``np.add.reduceat``), earliest timestamps, the indptr of its pins;
5. ``_scatter``: the board-major direction is a counting sort of the pin-major one, no second
   sort and no second gather: each thread walks its pins in order and writes each edge at its
   board's cursor (per-thread cursors from the board counts), so pins come out ascending within
   each board.

Why: the numpy kernel pays, per direction, a sort of 10M int64 keys and a random gather of the
weights, and the directions can only share two threads by running side by side; here the sort
is a few passes over cache-sized bins, the weights ride along, and the board direction comes
from a sequential read of the pin direction with cursors that fit in cache (benchmarks/RESULTS.md,
"Graph build").

numba is imported on first use (``available()``), like ``sampling.fanout_kernels``; without it,
or when a record cannot hold (pin's low bits, board) (``fits``), ``graph.csr`` runs the numpy
kernel, which gives the same arrays.
"""
from __future__ import annotations

import functools
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from graph.csr_direction import bits, empty_prefaulted, is_constant

__all__ = ["available", "set_enabled", "enabled", "loaded", "warm_up", "threads_for", "EDGES_PER_BIN", "MAX_BIN_BITS",
           "MAX_THREADS", "BLOCK", "PAYLOAD_NONE", "PAYLOAD_WEIGHT", "PAYLOAD_POSITION", "fits",
           "build_both_directions"]

_ENABLED = True
_LOADED = False  # a compiled build has run in this process
# Edges per bin, about: a bin is sorted in the core's cache (2048 records: 16 KiB). Tests lower it.
EDGES_PER_BIN = 2048
# At most 2^20 bins: each thread keeps an int64 histogram and a cursor per bin (8 MiB each).
MAX_BIN_BITS = 20
# Threads of the compiled build (each adds a histogram and cursors over the bins, B board counts
# and two buffers of its part's largest bin).
MAX_THREADS = 8


@functools.lru_cache(maxsize=None)
def _compiled() -> SimpleNamespace | None:
    """The jitted kernels, made on first use (importing numba costs 0.2-0.3 s, so ``import
    graph`` does not pay it); None when numba does not import."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; a broken install falls back
        return None
    global _value, _block_sum, _run_sum, _radix_pass
    jit = numba.njit(cache=True, nogil=True)
    # ``_extract`` and ``_sort_bins`` call these through this module's globals, which must be
    # the compiled functions when they are compiled.
    _value, _block_sum, _run_sum = jit(_value), jit(_block_sum), jit(_run_sum)
    _radix_pass = jit(_radix_pass)
    return SimpleNamespace(histogram=jit(_histogram), fill_records=jit(_fill_records),
                           sort_bins=jit(_sort_bins), split=jit(_split), extract=jit(_extract), scatter=jit(_scatter))


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
    build_both_directions(pins, boards, 2, 2, np.array([1.0, 2.0, 3.0], dtype=np.float32), None,
                          np.dtype(np.int32), threads=1)


# ------------------------------------------------------------------------------ kernels
# Plain Python, compiled by ``_compiled``; the tests run the compiled versions.
# A record (int64, never negative): bits 62..32 ``(pin & low_mask) << board_bits | board`` (the
# pin's high bits are its bin), bits 31..0 the payload: the float32 weight's bits, the edge's
# position, or 0 (``PAYLOAD_*``).
PAYLOAD_NONE, PAYLOAD_WEIGHT, PAYLOAD_POSITION = 0, 1, 2


def _histogram(pins, lo, hi, shift, hist):  # pragma: no cover - compiled
    """hist[pins[e] >> shift] += 1 for e in [lo, hi). pins int64 [E]; hist int64 [bins]."""
    for e in range(lo, hi):
        hist[pins[e] >> shift] += 1


def _fill_records(pins, boards, weight_bits, payload, lo, hi, shift, board_bits, cursor, rec):  # pragma: no cover
    """The records of edges [lo, hi), each written at the cursor of its pin's bin
    (``cursor[pin >> shift]``, int64 [bins], advanced), so each bin holds its edges in edge
    order. weight_bits: uint32 [E], the float32 weights' bits (read when ``payload`` is
    ``PAYLOAD_WEIGHT``)."""
    low_mask = (1 << shift) - 1
    for e in range(lo, hi):
        p = pins[e]
        r = (((p & low_mask) << board_bits) | boards[e]) << 32
        if payload == PAYLOAD_WEIGHT:
            r |= np.int64(weight_bits[e])
        elif payload == PAYLOAD_POSITION:
            r |= e
        b = p >> shift
        rec[cursor[b]] = r
        cursor[b] += 1


def _radix_pass(src, src_lo, dst, n, count, digit_shift):  # pragma: no cover - compiled
    """Stable scatter of src[src_lo:src_lo + n] into dst[:n] by the record's byte at
    ``digit_shift``; count int64 [257]: the byte's start offsets (advanced)."""
    for i in range(src_lo, src_lo + n):
        r = src[i]
        d = (r >> digit_shift) & 255
        dst[count[d]] = r
        count[d] += 1


def _sort_bins(rec, bin_start, b_lo, b_hi, shift, key_bits, board_bits, scratch, spare, scratch_f32,
               spare_f32, count, repeats, board_counts, compact, payload, w_col, w_mode, indptr, pin_lo,
               pin_hi, f32, u32):  # pragma: no cover - compiled
    """Sort the records of each bin in [b_lo, b_hi) (the pins [pin_lo, pin_hi)) by their high
    ``key_bits`` bits (pin's low bits, board), stably (repeats keep edge order): a
    least-significant-digit radix sort, a byte a pass, in the core's cache. repeats[b]: the
    bin's records whose (pin, board) equals the previous one's; board_counts[board] += 1 for
    every other record.

    ``compact`` False: each bin's sorted records go back in place (``_extract`` unpacks them).
    True (no positions in the payload): one record per (pin, board) run, ``board << 32 |
    weight bits`` (the float32 of the run's weights summed as numpy sums, ``_run_sum``: from
    the payloads, or the constant ``w_col[0]`` with ``w_mode`` 1), is written from the part's
    first record on, and indptr[p + 1] for p in [pin_lo, pin_hi) is the part's records
    before pin p + 1 (``_split`` adds the part's offset). scratch, spare int64 [>= largest
    bin] and their float32 views; count int64 [ceil(key_bits / 8), 257]; f32 float32 [1] and
    u32 its uint32 view (a float's bits)."""
    board_mask = (1 << board_bits) - 1
    passes = (key_bits + 7) // 8
    final = scratch if passes % 2 else spare  # where the last pass leaves a bin
    final_f32 = scratch_f32 if passes % 2 else spare_f32
    if w_mode == 1:
        f32[0] = np.float32(w_col[0])
    const_bits = np.int64(u32[0]) if w_mode == 1 else 0
    part_lo = bin_start[b_lo]
    o = part_lo
    p = pin_lo
    for b in range(b_lo, b_hi):
        lo, hi = bin_start[b], bin_start[b + 1]
        n = hi - lo
        count[:, :] = 0
        for i in range(lo, hi):  # every pass's byte counts in one read, unrolled
            h = rec[i] >> 32
            count[0, (h & 255) + 1] += 1
            if passes > 1:
                count[1, ((h >> 8) & 255) + 1] += 1
            if passes > 2:
                count[2, ((h >> 16) & 255) + 1] += 1
            if passes > 3:
                count[3, ((h >> 24) & 255) + 1] += 1
        for d in range(passes):
            for c in range(1, 257):
                count[d, c] += count[d, c - 1]
        _radix_pass(rec, lo, scratch, n, count[0], 32)
        for d in range(1, passes):  # scratch and spare in turn
            if d % 2:
                _radix_pass(scratch, 0, spare, n, count[d], 32 + 8 * d)
            else:
                _radix_pass(spare, 0, scratch, n, count[d], 32 + 8 * d)
        if not compact:
            rep = 0
            prev = -1
            for i in range(n):
                r = final[i]
                rec[lo + i] = r
                h = r >> 32
                if h == prev:
                    rep += 1
                else:
                    board_counts[h & board_mask] += 1
                prev = h
            repeats[b] = rep
            continue
        # one record per run, written at o <= lo + i: this bin is in scratch or spare by now
        o_bin = o
        i = 0
        while i < n:
            r = final[i]
            h = r >> 32
            pin = (b << shift) | (h >> board_bits)
            while p < pin:
                indptr[p + 1] = o - part_lo
                p += 1
            j = i + 1
            while j < n and (final[j] >> 32) == h:
                j += 1
            board = h & board_mask
            board_counts[board] += 1
            if j - i == 1:
                rec[o] = (board << 32) | (r & 0xFFFFFFFF if w_mode == 2 else const_bits)
            elif w_mode:
                if w_mode == 2:
                    f32[0] = np.float32(_run_sum(final_f32, final, i, j, payload, 1))
                else:
                    f32[0] = np.float32(_run_sum(w_col, final, i, j, payload, 0))
                rec[o] = (board << 32) | np.int64(u32[0])
            else:
                rec[o] = board << 32
            o += 1
            i = j
        repeats[b] = n - (o - o_bin)
    if compact:
        while p < pin_hi:
            indptr[p + 1] = o - part_lo
            p += 1


def _split(rec, rec_f32, part_lo, kept, out_at, indices, w_mode, w_out, t_mode, t_const, t_out,
           indptr, pin_lo, pin_hi):  # pragma: no cover - compiled
    """The pin-major outputs of a part ``_sort_bins`` compacted: its ``kept`` records from
    rec[part_lo] into indices / w_out / t_out from ``out_at`` (weights, ``w_mode`` not 0, from
    the records' low halves, ``rec_f32`` the records' float32 view; timestamps constant or
    none), and the part's offset added to indptr[pin_lo + 1:pin_hi + 1]."""
    for q in range(kept):
        r = rec[part_lo + q]
        indices[out_at + q] = r >> 32
    if w_mode:
        for q in range(kept):
            w_out[out_at + q] = rec_f32[2 * (part_lo + q)]
    if t_mode == 1:
        for q in range(kept):
            t_out[out_at + q] = t_const
    for p in range(pin_lo, pin_hi):
        indptr[p + 1] += out_at


def _value(values, rec, at, payload, step):  # pragma: no cover - compiled
    """float64 of the attribute of the sorted record ``at``: its payload's float32 (``values``
    the records' float32 view, little-endian: the low half of record ``at`` is ``values[2 *
    at]``), ``values[position]``, or ``values[0]`` for a constant column (``step`` 0)."""
    if payload == PAYLOAD_WEIGHT:
        return np.float64(values[2 * at])
    return np.float64(values[(rec[at] & 0xFFFFFFFF) * step])


def _block_sum(values, rec, lo, n, payload, step):  # pragma: no cover - compiled
    """numpy's pairwise sum (``DOUBLE_pairwise_sum``) of the float64 attributes of the sorted
    records lo..lo + n - 1 (``_value``), n <= 128: below 8 values a plain loop from -0.0,
    otherwise eight accumulators, then the rest."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += _value(values, rec, i, payload, step)
        return res
    r0, r1 = _value(values, rec, lo, payload, step), _value(values, rec, lo + 1, payload, step)
    r2, r3 = _value(values, rec, lo + 2, payload, step), _value(values, rec, lo + 3, payload, step)
    r4, r5 = _value(values, rec, lo + 4, payload, step), _value(values, rec, lo + 5, payload, step)
    r6, r7 = _value(values, rec, lo + 6, payload, step), _value(values, rec, lo + 7, payload, step)
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += _value(values, rec, lo + i, payload, step)
        r1 += _value(values, rec, lo + i + 1, payload, step)
        r2 += _value(values, rec, lo + i + 2, payload, step)
        r3 += _value(values, rec, lo + i + 3, payload, step)
        r4 += _value(values, rec, lo + i + 4, payload, step)
        r5 += _value(values, rec, lo + i + 5, payload, step)
        r6 += _value(values, rec, lo + i + 6, payload, step)
        r7 += _value(values, rec, lo + i + 7, payload, step)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += _value(values, rec, lo + i, payload, step)
        i += 1
    return res


def _run_sum(values, rec, lo, hi, payload, step):  # pragma: no cover - compiled
    """The float64 sum of the attributes of the sorted edges [lo, hi) (a run of repeats) as
    ``np.add.reduceat`` gives it: the first value plus numpy's pairwise sum of the rest (blocks
    of at most 128, ``_block_sum``; above, halves cut at a multiple of 8). numpy recurses; this
    walks the same tree with an explicit stack (numba caches no recursive functions)."""
    first = _value(values, rec, lo, payload, step)
    lo += 1
    n = hi - lo
    if n <= 128:
        return first + _block_sum(values, rec, lo, n, payload, step)
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
            sums[num_sums] = _block_sum(values, rec, f_lo, f_n, payload, step)
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


# Records per block of ``_extract``: with positions as payloads, the attributes of a block are
# gathered into a buffer that stays in L1 before the block is unpacked.
BLOCK = 512


def _extract(rec, bin_start, b_lo, b_hi, shift, board_bits, pin_lo, pin_hi, out_at, indptr, indices,
             payload, w_in, w_mode, w_out, t_in, t_mode, t_out):  # pragma: no cover - compiled
    """Unpack the sorted records of bins [b_lo, b_hi) (the pins [pin_lo, pin_hi)) into the
    pin-major outputs from ``out_at``: one entry per (pin, board) run. indices[o] = board;
    w_out[o] (float32) = the run's weights summed in float64 in edge order, pairwise as numpy
    sums; t_out[o] = the run's earliest timestamp; indptr[p + 1] for p in [pin_lo, pin_hi).
    ``w_mode``/``t_mode``: 0 none, 1 constant (``x_in[0]``), 2 per edge: the payload's weight
    (``w_in`` the records' float32 view) or ``x_in[position]``.

    Attributes read by position are gathered a block (``BLOCK`` records) at a time by a loop
    without branches into a small buffer: in the branchy unpacking loop the CPU keeps few of
    these random reads in flight (0.35 s against 0.07 s for 10M edges on the development VM).
    Runs of repeats, rare, read their values straight from the inputs."""
    board_mask = (1 << board_bits) - 1
    lo, hi = bin_start[b_lo], bin_start[b_hi]
    gather_w = w_mode == 2 and payload == PAYLOAD_POSITION
    w_step = 1 if w_mode == 2 else 0
    w_buf = np.empty(BLOCK, w_in.dtype)
    t_buf = np.empty(BLOCK, t_in.dtype)
    o = out_at
    p = pin_lo
    b = b_lo
    bin_end = lo
    i = lo
    while i < hi:
        block = i
        stop = min(i + BLOCK, hi)
        if gather_w:
            for m in range(block, stop):
                w_buf[m - block] = w_in[rec[m] & 0xFFFFFFFF]
        if t_mode == 2:
            for m in range(block, stop):
                t_buf[m - block] = t_in[rec[m] & 0xFFFFFFFF]
        while i < stop:
            while i >= bin_end:  # runs never cross bins: a bin's records share the pin's high bits
                b += 1
                bin_end = bin_start[b]
            h = rec[i] >> 32
            pin = ((b - 1) << shift) | (h >> board_bits)
            while p < pin:
                indptr[p + 1] = o
                p += 1
            j = i + 1
            while j < bin_end and (rec[j] >> 32) == h:
                j += 1
            indices[o] = h & board_mask
            if j - i == 1:
                if w_mode == 2:
                    w_out[o] = w_buf[i - block] if gather_w else w_in[2 * i]
                elif w_mode == 1:
                    w_out[o] = w_in[0]
                if t_mode == 2:
                    t_out[o] = t_buf[i - block]
                elif t_mode == 1:
                    t_out[o] = t_in[0]
            else:
                if w_mode:
                    w_out[o] = _run_sum(w_in, rec, i, j, payload, w_step)
                if t_mode == 1:
                    t_out[o] = t_in[0]
                elif t_mode == 2:
                    t = t_in[rec[i] & 0xFFFFFFFF]
                    for m in range(i + 1, j):
                        t = min(t, t_in[rec[m] & 0xFFFFFFFF])
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
    which must stay small beside the 8-byte record per edge)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_THREADS, num_edges >> 18, num_edges // max(num_boards, 1)))


def _layout(num_pins: int, num_boards: int, num_edges: int) -> tuple[int, int] | None:
    """(bin_bits, shift) of a build: 2^bin_bits bins of 2^shift pins each, about
    ``EDGES_PER_BIN`` edges a bin, and the pin's low ``shift`` bits beside the board in a
    record's 31 high bits; None when no layout within ``MAX_BIN_BITS`` fits."""
    pin_bits, board_bits = bits(num_pins), bits(num_boards)
    if board_bits > 31:
        return None
    bin_bits = min(pin_bits, max(bits(num_edges // EDGES_PER_BIN), 1))
    bin_bits = max(bin_bits, pin_bits + board_bits - 31)
    if bin_bits > MAX_BIN_BITS:
        return None
    return bin_bits, max(pin_bits - bin_bits, 0)


def _payload(weights: np.ndarray | None, timestamps: np.ndarray | None) -> int:
    """What a record's low 32 bits carry: the float32 weight when it is the only per-edge
    attribute (no gather at all), the edge's position when another varies, else nothing."""
    w_mode, t_mode = _mode(weights), _mode(timestamps)
    if w_mode == 2 and weights.dtype == np.float32 and t_mode != 2 and sys.byteorder == "little":
        return PAYLOAD_WEIGHT
    return PAYLOAD_POSITION if 2 in (w_mode, t_mode) else PAYLOAD_NONE


def fits(num_pins: int, num_boards: int, num_edges: int) -> bool:
    """Whether the compiled build takes this graph: a bin layout fits, and positions (when a
    record carries them) fit in 32 bits."""
    return _layout(num_pins, num_boards, num_edges) is not None and num_edges <= 1 << 32


def build_both_directions(pins: np.ndarray, boards: np.ndarray, num_pins: int, num_boards: int,
                          weights: np.ndarray | None, timestamps: np.ndarray | None,
                          idx_dtype: np.dtype, threads: int | None = None):
    """Both CSR directions of validated edges (pins, boards int64 [E], E > 0, ``fits``).

    weights: float32/float64 [E], a stride-0 constant column, or None; timestamps: int64 [E],
    constant or None. Returns (pin_indptr int64 [P + 1], pin_indices idx_dtype [E'],
    pin_weights float32 [E'] | None, pin_timestamps int64 [E'] | None, board_indptr int64
    [B + 1], board_indices idx_dtype [E'], board_weights, board_timestamps, num_duplicates):
    what ``sorted_direction`` gives for each direction.
    """
    import numba

    k = _compiled()
    n = int(pins.shape[0])
    t = threads or threads_for(n, num_boards)
    layout = _layout(num_pins, num_boards, n)
    if layout is None or n > 1 << 32:
        raise ValueError(f"the compiled build does not fit {num_pins} pins, {num_boards} boards, {n} edges")
    bin_bits, shift = layout
    num_bins = 1 << bin_bits
    board_bits = bits(num_boards)
    w_mode, t_mode = _mode(weights), _mode(timestamps)
    payload = _payload(weights, timestamps)
    w_in, t_in = _column(weights, np.float32), _column(timestamps, np.int64)
    weight_bits = weights.view(np.uint32) if payload == PAYLOAD_WEIGHT else np.zeros(1, np.uint32)
    edge_cuts = [n * i // t for i in range(t + 1)]

    with ThreadPoolExecutor(max_workers=t) as pool:
        def each(kernel, args_of):
            """kernel(*args_of(i)) for i in range(t), one per thread. The kernel is
            compiled (or loaded from numba's cache) for these argument types on this thread
            first: numba's first dispatch from several threads at once can crash."""
            args = [args_of(i) for i in range(t)]
            kernel.compile(tuple(numba.typeof(a) for a in args[0]))
            return list(pool.map(lambda a: kernel(*a), args))

        # 1. edges per bin, per thread; each bin's start; the bins cut into t parts of about
        # n / t edges (a part's bins, and so its pins, are contiguous).
        hists = np.zeros((t, num_bins), dtype=np.int64)
        each(k.histogram, lambda i: (pins, edge_cuts[i], edge_cuts[i + 1], shift, hists[i]))
        per_bin = hists.sum(axis=0)
        bin_start = np.zeros(num_bins + 1, dtype=np.int64)
        np.cumsum(per_bin, out=bin_start[1:])
        cursors = bin_start[:-1][None, :] + np.cumsum(hists, axis=0) - hists  # [thread, bin]
        del hists
        bin_cuts = np.concatenate([[0], np.searchsorted(bin_start[1:], [n * i / t for i in range(1, t)],
                                                        side="left") + 1, [num_bins]])
        bin_cuts = [int(c) for c in np.maximum.accumulate(np.minimum(bin_cuts, num_bins))]
        pin_cuts = [min(c << shift, num_pins) for c in bin_cuts]

        # 2. records into their bins
        rec = empty_prefaulted(n, np.int64, pool, t)
        each(k.fill_records, lambda i: (pins, boards, weight_bits, payload, edge_cuts[i], edge_cuts[i + 1],
                                        shift, board_bits, cursors[i], rec))
        del cursors

        # 3. each bin sorted (the records compacted to one a (pin, board) when no positions are
        # needed); its repeats give the output offsets, and the kept edges per board (per
        # thread) the board direction's cursors
        compact = payload != PAYLOAD_POSITION
        repeats = np.empty(num_bins, dtype=np.int64)
        board_counts = np.zeros((t, num_boards), dtype=np.int64)
        pin_indptr = empty_prefaulted(num_pins + 1, np.int64, pool, t)
        pin_indptr[0] = 0
        key_bits = shift + board_bits

        def sort_args(r):
            # buffers for the part's largest bin (one pin with millions of boards stays one thread's cost)
            largest = int(per_bin[bin_cuts[r]:bin_cuts[r + 1]].max(initial=0))
            scratch, spare, f32 = np.empty(largest, np.int64), np.empty(largest, np.int64), np.empty(1, np.float32)
            return (rec, bin_start, bin_cuts[r], bin_cuts[r + 1], shift, key_bits, board_bits, scratch, spare,
                    scratch.view(np.float32), spare.view(np.float32), np.zeros(((key_bits + 7) // 8, 257), np.int64),
                    repeats, board_counts[r], compact, payload, w_in, w_mode, pin_indptr, pin_cuts[r],
                    pin_cuts[r + 1], f32, f32.view(np.uint32))
        each(k.sort_bins, sort_args)
        num_dup = int(repeats.sum())
        m = n - num_dup
        kept = [int(bin_start[bin_cuts[r + 1]] - bin_start[bin_cuts[r]])
                - int(repeats[bin_cuts[r]:bin_cuts[r + 1]].sum()) for r in range(t)]
        out_at = np.concatenate([[0], np.cumsum(kept)])

        # 4. pin-major outputs
        pin_indices = empty_prefaulted(m, idx_dtype, pool, t)
        pin_w = empty_prefaulted(m, np.float32, pool, t) if w_mode else np.zeros(1, np.float32)
        pin_t = empty_prefaulted(m, np.int64, pool, t) if t_mode else np.zeros(1, np.int64)
        if compact:
            rec_f32 = rec.view(np.float32)
            each(k.split, lambda r: (rec, rec_f32, bin_start[bin_cuts[r]], kept[r], out_at[r], pin_indices,
                                     w_mode, pin_w, t_mode, t_in[0], pin_t, pin_indptr, pin_cuts[r],
                                     pin_cuts[r + 1]))
            del rec_f32
        else:
            each(k.extract, lambda r: (rec, bin_start, bin_cuts[r], bin_cuts[r + 1], shift, board_bits,
                                       pin_cuts[r], pin_cuts[r + 1], out_at[r], pin_indptr, pin_indices,
                                       payload, w_in, w_mode, pin_w, t_in, t_mode, pin_t))

        # 5. board-major outputs by counting sort
        per_board = board_counts.sum(axis=0)
        board_indptr = np.empty(num_boards + 1, dtype=np.int64)
        board_indptr[0] = 0
        np.cumsum(per_board, out=board_indptr[1:])
        board_cursor = board_indptr[:-1][None, :] + np.cumsum(board_counts, axis=0) - board_counts
        board_cursor = np.ascontiguousarray(board_cursor)
        del board_counts
        # The records (8 bytes an edge, read no more) hold the board-major indices and weights
        # when they take 8 bytes together: memory touched for the first time is a large part of
        # a build's time (graph.csr_direction.empty_prefaulted).
        if idx_dtype.itemsize + (4 if w_mode else 0) <= rec.itemsize:
            board_indices = rec.view(idx_dtype)[:m]
            board_w = rec.view(np.float32)[m:2 * m] if w_mode else np.zeros(1, np.float32)
        else:
            board_indices = empty_prefaulted(m, idx_dtype, pool, t)
            board_w = empty_prefaulted(m, np.float32, pool, t) if w_mode else np.zeros(1, np.float32)
        del rec
        board_t = empty_prefaulted(m, np.int64, pool, t) if t_mode else np.zeros(1, np.int64)
        each(k.scatter, lambda r: (pin_cuts[r], pin_cuts[r + 1], pin_indptr, pin_indices, pin_w, pin_t,
                                   w_mode, t_mode, board_cursor[r], board_indices, board_w, board_t))

    global _LOADED
    _LOADED = True
    return (pin_indptr, pin_indices, pin_w if w_mode else None, pin_t if t_mode else None,
            board_indptr, board_indices, board_w if w_mode else None, board_t if t_mode else None,
            num_dup)
