"""from_edges' input checks (graph.edge_checks) on the reductions of graph.csr.edge_ranges: the
ranges equal numpy's on both of its paths, every bad input is named (array, position, value),
and a constant weight column reaches the build as a broadcast."""
from __future__ import annotations

import numpy as np
import pytest

import graph.csr as csr
import graph.store as store
from graph import PinBoardGraph
from graph.errors import InputError


def _edges(n=5001, seed=11):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 300, n), rng.integers(0, 40, n), rng.random(n).astype(np.float32))


@pytest.mark.parametrize("parallel_from", [1 << 62, 100])   # one thread, then two
def test_edge_ranges_equal_numpy_reductions(parallel_from, monkeypatch):
    monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", parallel_from)
    pins, boards, w = _edges()
    pins[3] = -5
    w[17], w[4000] = -0.0, np.nan
    r = csr.edge_ranges(pins, boards, w)
    bits = w.view(np.uint32)
    assert (r.pin_min, r.pin_max, r.board_min, r.board_max) == (-5, pins.max(), boards.min(), boards.max())
    assert (r.weight_bits_min, r.weight_bits_max) == (bits.min(), bits.max())
    no_weights = csr.edge_ranges(pins, boards)
    assert (no_weights.weight_bits_min, no_weights.weight_bits_max) == (None, None)
    assert csr.edge_ranges(pins[:0], boards[:0], w[:0]) == csr.EdgeRanges(0, 0, 0, 0)


@pytest.mark.parametrize("parallel_from", [1 << 62, 100])
def test_from_edges_names_what_is_at_fault(parallel_from, monkeypatch):
    monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", parallel_from)
    pins, boards, w = _edges()
    bad = pins.copy()
    bad[1234] = -3
    with pytest.raises(InputError, match=r"pin_ids: negative id -3 at position 1234"):
        PinBoardGraph.from_edges(bad, boards, 300, 40)
    with pytest.raises(InputError, match=r"board_ids: negative id -1 at position 9"):
        PinBoardGraph.from_edges(pins, np.where(np.arange(len(boards)) == 9, -1, boards))
    with pytest.raises(InputError, match=r"board_ids: id 40 at position 0 is out of range for num_boards=40"):
        PinBoardGraph.from_edges(pins, np.where(np.arange(len(boards)) == 0, 40, boards), 300, 40)
    for value in (np.nan, -1.0, np.inf, -np.inf):
        badw = w.copy()
        badw[999] = value
        with pytest.raises(InputError, match=r"weights: invalid weight .* at edge 999"):
            PinBoardGraph.from_edges(pins, boards, 300, 40, weights=badw)
    signed_zero = w.copy()
    signed_zero[7] = -0.0          # valid although its sign bit is set
    g = PinBoardGraph.from_edges(pins, boards, weights=signed_zero)
    assert (g.num_pins, g.num_boards) == (int(pins.max()) + 1, int(boards.max()) + 1)


def test_a_constant_weight_column_reaches_the_build_as_a_broadcast(monkeypatch):
    pins, boards, _ = _edges()
    seen = []
    real = store.build_bipartite_csr
    monkeypatch.setattr(store, "build_bipartite_csr", lambda *a, **k: seen.append(a[4]) or real(*a, **k))
    const = PinBoardGraph.from_edges(pins, boards, 300, 40, weights=np.full(len(pins), 2.5, np.float32))
    varied = PinBoardGraph.from_edges(pins, boards, 300, 40, weights=np.arange(len(pins), dtype=np.float32))
    assert seen[0].strides == (0,) and seen[1].strides == (4,)
    # repeated edges sum their weights: 2.5 times each (pin, board)'s multiplicity, pin-major
    _, multiplicity = np.unique(pins * 40 + boards, return_counts=True)
    assert const.num_edges == varied.num_edges == len(multiplicity)
    np.testing.assert_array_equal(const.pin_weights.numpy(), (2.5 * multiplicity).astype(np.float32))
