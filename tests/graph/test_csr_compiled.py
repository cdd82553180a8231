"""The compiled build (graph.csr_compiled) gives the numpy kernel's arrays byte for byte.

``tests/graph/test_csr.py`` also runs its reference tests on the compiled path; here the two
builds are compared bit for bit on inputs that reach every branch: runs of repeats longer than
numpy's pairwise blocks (128 and 256 values, summed through the explicit-stack tree), constant
and float64 columns, several threads (parts of every size, empty ones included), int64 indices.
"""
from __future__ import annotations

import numpy as np
import pytest

import graph.csr as csr
import graph.csr_compiled as compiled
import graph.csr_direction as direction
from graph.csr import build_bipartite_csr, index_dtype_for

pytestmark = pytest.mark.skipif(not compiled.available(), reason="numba does not import: no compiled build")

FIELDS = ("pin_indptr", "pin_indices", "pin_weights", "pin_timestamps", "board_indptr", "board_indices",
          "board_weights", "board_timestamps")


def numpy_build(pins, boards, num_pins, num_boards, weights, timestamps, idx_dtype):
    """Both directions through ``csr_direction.sorted_direction`` (the numpy kernel)."""
    pin_bits, board_bits = direction.bits(num_pins), direction.bits(num_boards)
    weights, timestamps = direction.constant_as_broadcast(weights), direction.constant_as_broadcast(timestamps)
    need_order = any(v is not None and not direction.is_constant(v) for v in (weights, timestamps))
    edge_bits = direction.bits(len(pins)) if need_order else 0
    a = direction.sorted_direction(pins, boards, num_pins, board_bits, edge_bits, weights, timestamps, idx_dtype)
    b = direction.sorted_direction(boards, pins, num_boards, pin_bits, edge_bits, weights, timestamps, idx_dtype)
    return (*a[:4], *b[:4], a[4]), weights, timestamps, edge_bits


def assert_same(got, want, case) -> None:
    assert got[8] == want[8], ("num_duplicates", case)
    for name, g, e in zip(FIELDS, got[:8], want[:8]):
        if e is None:
            assert g is None, (name, case)
            continue
        assert g.dtype == e.dtype and g.shape == e.shape, (name, case)
        assert g.tobytes() == e.tobytes(), (name, case)
        assert g.flags.c_contiguous and g.flags.writeable, (name, case)


def edges_with_runs(rng, num_pins, num_boards, num_edges, run_lengths):
    """Random edges, then runs of one (pin, board) of the given lengths at random positions;
    weights over twelve orders of magnitude, so the summation order shows in the bits."""
    pins = rng.integers(0, num_pins, num_edges)
    boards = rng.integers(0, num_boards, num_edges)
    at = 0
    for length in run_lengths:
        pins[at:at + length], boards[at:at + length] = pins[at], boards[at]
        at += length
    order = rng.permutation(num_edges)
    pins, boards = pins[order], boards[order]
    w = (rng.random(num_edges) * 10.0 ** rng.uniform(-6, 6, num_edges)).astype(np.float32)
    t = rng.integers(-(1 << 40), 1 << 40, num_edges)
    return pins, boards, w, t


@pytest.mark.parametrize("threads, edges_per_bin", [(1, 2048), (2, 2048), (3, 4), (5, 64), (2, 1)])
def test_compiled_equals_numpy_kernel_bit_for_bit(threads, edges_per_bin, monkeypatch):
    """Few large bins (the default on these small graphs) and many small ones (down to one
    pin a bin); sort keys of 1 to 4 bytes (one to four radix passes)."""
    monkeypatch.setattr(compiled, "EDGES_PER_BIN", edges_per_bin)
    rng = np.random.default_rng(threads)
    cases = [(1, 1, 1, []), (5, 3, 400, [129, 7]), (60, 40, 3000, [2] * 200), (2, 2, 500, []),
             (3000, 2, 2000, [300, 1000]), (40, 30, 7, []), (1 << 12, 1 << 9, 5000, [256, 255, 8, 9]),
             (1 << 9, 1 << 14, 3000, [40, 3]), (1 << 12, 1 << 20, 3000, [130, 2])]
    for num_pins, num_boards, num_edges, runs in cases:
        pins, boards, w, t = edges_with_runs(rng, num_pins, num_boards, num_edges, runs)
        for weights in (None, w, w.astype(np.float64) * 1.1, np.full_like(w, 0.7), np.full(num_edges, 0.1)):
            for timestamps in (None, t, np.full_like(t, 12345)):
                for idx_dtype in (index_dtype_for(num_pins, num_boards), np.dtype(np.int64)):
                    want, cw, ct, edge_bits = numpy_build(pins, boards, num_pins, num_boards, weights,
                                                          timestamps, idx_dtype)
                    got = compiled.build_both_directions(pins, boards, num_pins, num_boards, cw, ct,
                                                         idx_dtype, threads=threads)
                    assert_same(got, want, (num_pins, num_boards, num_edges, threads, idx_dtype,
                                            None if weights is None else weights.dtype,
                                            timestamps is None))


def test_skewed_pins_and_empty_parts():
    """All edges on one pin (every part but one empty) and on the last pin id."""
    rng = np.random.default_rng(7)
    for pin in (0, 4999):
        pins = np.full(3000, pin, dtype=np.int64)
        boards = rng.integers(0, 50, 3000)
        w = rng.random(3000, dtype=np.float32)
        want, cw, ct, edge_bits = numpy_build(pins, boards, 5000, 50, w, None, np.dtype(np.int32))
        got = compiled.build_both_directions(pins, boards, 5000, 50, cw, ct, np.dtype(np.int32), threads=4)
        assert_same(got, want, pin)


def test_build_bipartite_csr_takes_the_compiled_path_from_the_threshold(monkeypatch):
    rng = np.random.default_rng(3)
    pins, boards, w, t = edges_with_runs(rng, 300, 40, 4000, [20, 3])
    calls = []
    real = compiled.build_both_directions
    monkeypatch.setattr(compiled, "build_both_directions", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(compiled, "_LOADED", False)
    monkeypatch.setattr(csr, "COMPILED_WARM_MIN_EDGES", 4000)
    below = build_bipartite_csr(pins, boards, 300, 40, w, t)  # cold: the higher threshold
    assert not calls
    monkeypatch.setattr(csr, "COMPILED_MIN_EDGES", 4000)
    above = build_bipartite_csr(pins, boards, 300, 40, w, t)
    assert calls == [1] and compiled.loaded()
    monkeypatch.setattr(csr, "COMPILED_MIN_EDGES", 1 << 62)
    build_bipartite_csr(pins, boards, 300, 40, w, t)  # loaded: the lower threshold
    assert calls == [1, 1]
    for name in ("pin_indptr", "pin_indices", "pin_weights", "pin_timestamps", "board_indptr",
                 "board_indices", "board_weights", "board_timestamps"):
        assert getattr(above, name).tobytes() == getattr(below, name).tobytes(), name
    compiled.set_enabled(False)
    try:
        build_bipartite_csr(pins, boards, 300, 40, w, t)
        assert calls == [1, 1]
    finally:
        compiled.set_enabled(True)
    monkeypatch.setattr(compiled, "MAX_BIN_BITS", 0)  # no bin layout fits: the numpy kernel
    assert not compiled.fits(300, 40, 4000)
    narrow = build_bipartite_csr(pins, boards, 300, 40, w, t)
    assert calls == [1, 1]
    assert narrow.pin_weights.tobytes() == below.pin_weights.tobytes()


def test_layout_fits_pin_low_bits_and_board_in_31_bits(monkeypatch):
    monkeypatch.setattr(compiled, "EDGES_PER_BIN", 2048)
    assert compiled._layout(1 << 20, 100_000, 10_000_000) == (13, 7)  # about 2048 edges a bin
    assert compiled._layout(1000, 10, 100) == (1, 9)  # at least two bins
    assert compiled._layout(1 << 28, 1 << 22, 1000) == (19, 9)  # more bins, so 9 + 22 bits fit
    assert compiled._layout(10, 1 << 32, 1000) is None  # boards alone need 33 bits
    assert compiled._layout(1 << 40, 1 << 24, 1000) is None  # over MAX_BIN_BITS bins
    assert not compiled.fits(10, 10, (1 << 32) + 1)  # positions over 32 bits


def test_payload_carries_float32_weights_when_nothing_else_varies():
    w32, t = np.arange(4, dtype=np.float32), np.arange(4)
    assert compiled._payload(w32, None) == compiled.PAYLOAD_WEIGHT
    assert compiled._payload(w32, np.broadcast_to(np.int64(5), (4,))) == compiled.PAYLOAD_WEIGHT
    assert compiled._payload(w32, t) == compiled.PAYLOAD_POSITION
    assert compiled._payload(w32.astype(np.float64), None) == compiled.PAYLOAD_POSITION
    assert compiled._payload(None, t) == compiled.PAYLOAD_POSITION
    assert compiled._payload(np.broadcast_to(np.float32(1), (4,)), None) == compiled.PAYLOAD_NONE
    assert compiled._payload(None, None) == compiled.PAYLOAD_NONE


def test_threads_for_bounds():
    assert compiled.threads_for(10, 5) == 1
    assert 1 <= compiled.threads_for(1 << 30, 1000) <= compiled.MAX_THREADS
    assert compiled.threads_for(1 << 30, 1 << 30) == 1  # one [B] table of counts, not eight


def test_warm_up_loads_the_kernels(monkeypatch):
    monkeypatch.setattr(compiled, "_LOADED", False)
    compiled.warm_up()
    assert compiled.loaded()


def test_phases_records_each_kernel_and_the_faulting_in():
    rng = np.random.default_rng(5)
    pins, boards, w, _ = edges_with_runs(rng, 300, 40, 4000, [20, 3])
    phases: dict = {}
    compiled.build_both_directions(pins, boards, 300, 40, w, None, np.dtype(np.int32), threads=2, phases=phases)
    assert set(phases) == {"histogram", "fill_records", "sort_bins", "split_compacted", "scatter", "fault_in"}
    assert all(v >= 0 for v in phases.values())
    compiled.build_both_directions(pins, boards, 300, 40, w, rng.integers(0, 9, 4000), np.dtype(np.int32),
                                   threads=2, phases=phases)  # positions: the unpacking kernel, times added
    assert "extract" in phases and "split_compacted" in phases

