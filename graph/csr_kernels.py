"""The kernels of the compiled graph build (``graph.csr_compiled``), as plain Python that numba
compiles on first use (``graph.numba_jit.jit_kernels``); the tests run the compiled versions.

Each kernel is one phase of the build on one thread's share of the edges, bins or pins (the
phases are described in ``graph.csr_compiled``): ``histogram``, ``fill_records``, ``sort_bins``
(with ``radix_pass``), ``split_compacted`` or ``extract``, ``scatter``. ``record_value``,
``block_sum`` and ``run_sum`` sum the weights of repeated edges in numpy's pairwise order, so the
float bits equal ``np.add.reduceat``'s.
"""
from __future__ import annotations

import numpy as np

__all__ = ["PAYLOAD_NONE", "PAYLOAD_WEIGHT", "PAYLOAD_POSITION", "BLOCK", "KERNELS", "HELPERS", "histogram",
           "fill_records", "radix_pass", "sort_bins", "split_compacted", "record_value", "block_sum", "run_sum",
           "extract", "scatter"]

# The phases the driver calls, and the functions they call through this module's globals (compiled
# first, so the kernels compile against compiled callees).
KERNELS = ("histogram", "fill_records", "sort_bins", "split_compacted", "extract", "scatter")
HELPERS = ("radix_pass", "record_value", "block_sum", "run_sum")

# A record (int64, never negative): bits 62..32 ``(pin & low_mask) << board_bits | board`` (the
# pin's high bits are its bin), bits 31..0 the payload: the float32 weight's bits, the edge's
# position, or 0 (``PAYLOAD_*``).
PAYLOAD_NONE, PAYLOAD_WEIGHT, PAYLOAD_POSITION = 0, 1, 2


def histogram(pins, lo, hi, shift, hist):  # pragma: no cover - compiled
    """hist[pins[e] >> shift] += 1 for e in [lo, hi). pins int64 [E]; hist int64 [bins]."""
    for e in range(lo, hi):
        hist[pins[e] >> shift] += 1


def fill_records(pins, boards, weight_bits, payload, lo, hi, shift, board_bits, cursor, rec):  # pragma: no cover
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


def radix_pass(src, src_lo, dst, n, count, digit_shift):  # pragma: no cover - compiled
    """Stable scatter of src[src_lo:src_lo + n] into dst[:n] by the record's byte at
    ``digit_shift``; count int64 [257]: the byte's start offsets (advanced)."""
    for i in range(src_lo, src_lo + n):
        r = src[i]
        d = (r >> digit_shift) & 255
        dst[count[d]] = r
        count[d] += 1


def sort_bins(rec, bin_start, b_lo, b_hi, shift, key_bits, board_bits, scratch, spare, scratch_f32,
               spare_f32, count, repeats, board_counts, compact, payload, w_col, w_mode, indptr, pin_lo,
               pin_hi, f32, u32):  # pragma: no cover - compiled
    """Sort the records of each bin in [b_lo, b_hi) (the pins [pin_lo, pin_hi)) by their high
    ``key_bits`` bits (pin's low bits, board), stably (repeats keep edge order): a
    least-significant-digit radix sort, a byte a pass, in the core's cache. repeats[b]: the
    bin's records whose (pin, board) equals the previous one's; board_counts[board] += 1 for
    every other record.

    ``compact`` False: each bin's sorted records go back in place (``extract`` unpacks them).
    True (no positions in the payload): one record per (pin, board) run, ``board << 32 |
    weight bits`` (the float32 of the run's weights summed as numpy sums, ``run_sum``: from
    the payloads, or the constant ``w_col[0]`` with ``w_mode`` 1), is written from the part's
    first record on, and indptr[p + 1] for p in [pin_lo, pin_hi) is the part's records
    before pin p + 1 (``split_compacted`` adds the part's offset). scratch, spare int64 [>= largest
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
        radix_pass(rec, lo, scratch, n, count[0], 32)
        for d in range(1, passes):  # scratch and spare in turn
            if d % 2:
                radix_pass(scratch, 0, spare, n, count[d], 32 + 8 * d)
            else:
                radix_pass(spare, 0, scratch, n, count[d], 32 + 8 * d)
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
                    f32[0] = np.float32(run_sum(final_f32, final, i, j, payload, 1))
                else:
                    f32[0] = np.float32(run_sum(w_col, final, i, j, payload, 0))
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


def split_compacted(rec, rec_f32, part_lo, kept, out_at, indices, w_mode, w_out, t_mode, t_const, t_out,
           indptr, pin_lo, pin_hi):  # pragma: no cover - compiled
    """The pin-major outputs of a part ``sort_bins`` compacted: its ``kept`` records from
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


def record_value(values, rec, at, payload, step):  # pragma: no cover - compiled
    """float64 of the attribute of the sorted record ``at``: its payload's float32 (``values``
    the records' float32 view, little-endian: the low half of record ``at`` is ``values[2 *
    at]``), ``values[position]``, or ``values[0]`` for a constant column (``step`` 0)."""
    if payload == PAYLOAD_WEIGHT:
        return np.float64(values[2 * at])
    return np.float64(values[(rec[at] & 0xFFFFFFFF) * step])


def block_sum(values, rec, lo, n, payload, step):  # pragma: no cover - compiled
    """numpy's pairwise sum (``DOUBLE_pairwise_sum``) of the float64 attributes of the sorted
    records lo..lo + n - 1 (``record_value``), n <= 128: below 8 values a plain loop from -0.0,
    otherwise eight accumulators, then the rest."""
    if n < 8:
        res = -0.0
        for i in range(lo, lo + n):
            res += record_value(values, rec, i, payload, step)
        return res
    r0, r1 = record_value(values, rec, lo, payload, step), record_value(values, rec, lo + 1, payload, step)
    r2, r3 = record_value(values, rec, lo + 2, payload, step), record_value(values, rec, lo + 3, payload, step)
    r4, r5 = record_value(values, rec, lo + 4, payload, step), record_value(values, rec, lo + 5, payload, step)
    r6, r7 = record_value(values, rec, lo + 6, payload, step), record_value(values, rec, lo + 7, payload, step)
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += record_value(values, rec, lo + i, payload, step)
        r1 += record_value(values, rec, lo + i + 1, payload, step)
        r2 += record_value(values, rec, lo + i + 2, payload, step)
        r3 += record_value(values, rec, lo + i + 3, payload, step)
        r4 += record_value(values, rec, lo + i + 4, payload, step)
        r5 += record_value(values, rec, lo + i + 5, payload, step)
        r6 += record_value(values, rec, lo + i + 6, payload, step)
        r7 += record_value(values, rec, lo + i + 7, payload, step)
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += record_value(values, rec, lo + i, payload, step)
        i += 1
    return res


def run_sum(values, rec, lo, hi, payload, step):  # pragma: no cover - compiled
    """The float64 sum of the attributes of the sorted edges [lo, hi) (a run of repeats) as
    ``np.add.reduceat`` gives it: the first value plus numpy's pairwise sum of the rest (blocks
    of at most 128, ``block_sum``; above, halves cut at a multiple of 8). numpy recurses; this
    walks the same tree with an explicit stack (numba caches no recursive functions)."""
    first = record_value(values, rec, lo, payload, step)
    lo += 1
    n = hi - lo
    if n <= 128:
        return first + block_sum(values, rec, lo, n, payload, step)
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
            sums[num_sums] = block_sum(values, rec, f_lo, f_n, payload, step)
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


# Records per block of ``extract``: with positions as payloads, the attributes of a block are
# gathered into a buffer that stays in L1 before the block is unpacked.
BLOCK = 512


def extract(rec, bin_start, b_lo, b_hi, shift, board_bits, pin_lo, pin_hi, out_at, indptr, indices,
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
                    w_out[o] = run_sum(w_in, rec, i, j, payload, w_step)
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


def scatter(pin_lo, pin_hi, pin_indptr, pin_indices, pin_w, pin_t, w_mode, t_mode, cursor,
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
