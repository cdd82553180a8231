"""Both CSR directions of an edge list in one compiled pass per phase (numba), split over threads.

The same arrays as ``graph.csr_direction.sorted_direction`` run on each direction, bit for bit
(``tests/graph/test_csr_compiled.py``), by a different algorithm:

1. ``histogram``: each thread counts its share of the edges into bins of pins (``pin >>
   shift``, about ``EDGES_PER_BIN`` edges a bin); the bins are cut into one contiguous range per
   thread holding about the same number of edges;
2. ``fill_records``: each thread packs its edges into int64 records and writes each at the
   cursor of its pin's bin, so a bin holds its edges in edge order. A record is ``(pin's low
   shift bits, board)`` in bits 62..32 (the pin's high bits are the bin) and a 32-bit payload:
   the float32 weight's bits when the weight is the only attribute that varies (it travels with
   the record: no gather), the edge's position when another varies, else nothing;
3. ``sort_bins``: each thread sorts its bins one at a time in the core's cache by a
   least-significant-digit radix sort of the 31 high bits, a byte a pass (stable, so repeats
   keep edge order), and counts repeated (pin, board) pairs, which gives every part's output
   offset, and the kept edges per board;
4. ``split_compacted`` (or ``extract`` when records carry positions): each thread writes its
   bins into the pin-major outputs: boards, weights (repeats summed in float64 with numpy's
   pairwise order, so the same bits as ``np.add.reduceat``), earliest timestamps, the indptr of
   its pins;
5. ``scatter``: the board-major direction is a counting sort of the pin-major one, no second
   sort and no second gather: each thread walks its pins in order and writes each edge at its
   board's cursor (per-thread cursors from the board counts), so pins come out ascending within
   each board.

Why: the numpy kernel pays, per direction, a sort of 10M int64 keys and a random gather of the
weights, and the directions can only share two threads by running side by side; here the sort
is a few passes over cache-sized bins, the weights ride along, and the board direction comes
from a sequential read of the pin direction with cursors that fit in cache (benchmarks/RESULTS.md,
"Graph build").

This module cuts the work and allocates the arrays; the kernels, one per phase, are in
``graph.csr_kernels``, compiled when first needed (``available()``, ``graph.numba_jit``);
without numba, or when a record cannot hold (pin's low bits, board) (``fits``), ``graph.csr``
runs the numpy kernel, which gives the same arrays.
"""
from __future__ import annotations

import functools
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np

from graph import csr_kernels as kernels
from graph.csr_direction import bits, empty_prefaulted, is_constant
from graph.csr_kernels import PAYLOAD_NONE, PAYLOAD_POSITION, PAYLOAD_WEIGHT
from graph.numba_jit import jit_kernels

__all__ = ["available", "set_enabled", "enabled", "loaded", "warm_up", "threads_for", "EDGES_PER_BIN", "MAX_BIN_BITS",
           "MAX_THREADS", "PAYLOAD_NONE", "PAYLOAD_WEIGHT", "PAYLOAD_POSITION", "fits",
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
    """The compiled kernels of ``graph.csr_kernels``, made on first use; None without numba."""
    return jit_kernels(kernels, kernels.KERNELS, kernels.HELPERS)


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
                          idx_dtype: np.dtype, threads: int | None = None, phases: dict | None = None):
    """Both CSR directions of validated edges (pins, boards int64 [E], E > 0, ``fits``).

    weights: float32/float64 [E], a stride-0 constant column, or None; timestamps: int64 [E],
    constant or None. Returns (pin_indptr int64 [P + 1], pin_indices idx_dtype [E'],
    pin_weights float32 [E'] | None, pin_timestamps int64 [E'] | None, board_indptr int64
    [B + 1], board_indices idx_dtype [E'], board_weights, board_timestamps, num_duplicates):
    what ``sorted_direction`` gives for each direction. ``phases``: given a dict, the wall
    seconds of each kernel (by name) and of faulting in the large arrays (``fault_in``) are
    added to it (``benchmarks/bench_build_phases.py``).
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
    phases = {} if phases is None else phases

    def timed(name, f, *args):
        start = time.perf_counter()
        result = f(*args)
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start
        return result

    with ThreadPoolExecutor(max_workers=t) as pool:
        def each(kernel, args_of):
            """kernel(*args_of(i)) for i in range(t), one per thread. The kernel is
            compiled (or loaded from numba's cache) for these argument types on this thread
            first: numba's first dispatch from several threads at once can crash."""
            args = [args_of(i) for i in range(t)]
            kernel.compile(tuple(numba.typeof(a) for a in args[0]))
            return timed(kernel.py_func.__name__, lambda: list(pool.map(lambda a: kernel(*a), args)))

        def fault_in(size, dtype):
            """An empty array faulted in on the build's threads (``empty_prefaulted``)."""
            return timed("fault_in", empty_prefaulted, size, dtype, pool, t)

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
        rec = fault_in(n, np.int64)
        each(k.fill_records, lambda i: (pins, boards, weight_bits, payload, edge_cuts[i], edge_cuts[i + 1],
                                        shift, board_bits, cursors[i], rec))
        del cursors

        # 3. each bin sorted (the records compacted to one a (pin, board) when no positions are
        # needed); its repeats give the output offsets, and the kept edges per board (per
        # thread) the board direction's cursors
        compact = payload != PAYLOAD_POSITION
        repeats = np.empty(num_bins, dtype=np.int64)
        board_counts = np.zeros((t, num_boards), dtype=np.int64)
        pin_indptr = fault_in(num_pins + 1, np.int64)
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
        pin_indices = fault_in(m, idx_dtype)
        pin_w = fault_in(m, np.float32) if w_mode else np.zeros(1, np.float32)
        pin_t = fault_in(m, np.int64) if t_mode else np.zeros(1, np.int64)
        if compact:
            rec_f32 = rec.view(np.float32)
            each(k.split_compacted, lambda r: (rec, rec_f32, bin_start[bin_cuts[r]], kept[r], out_at[r],
                                               pin_indices, w_mode, pin_w, t_mode, t_in[0], pin_t, pin_indptr,
                                               pin_cuts[r], pin_cuts[r + 1]))
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
            board_indices = fault_in(m, idx_dtype)
            board_w = fault_in(m, np.float32) if w_mode else np.zeros(1, np.float32)
        del rec
        board_t = fault_in(m, np.int64) if t_mode else np.zeros(1, np.int64)
        each(k.scatter, lambda r: (pin_cuts[r], pin_cuts[r + 1], pin_indptr, pin_indices, pin_w, pin_t,
                                   w_mode, t_mode, board_cursor[r], board_indices, board_w, board_t))

    global _LOADED
    _LOADED = True
    return (pin_indptr, pin_indices, pin_w if w_mode else None, pin_t if t_mode else None,
            board_indptr, board_indices, board_w if w_mode else None, board_t if t_mode else None,
            num_dup)
