"""The CSR build kernel (graph.csr) against a naive dictionary reference, on every code path."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import graph.csr as csr
import graph.csr_compiled as compiled
import graph.csr_direction as direction
from graph.csr import build_bipartite_csr, index_dtype_for

FIELDS = ("pin_indptr", "pin_indices", "board_indptr", "board_indices", "pin_weights",
          "board_weights", "pin_timestamps", "board_timestamps")


def naive_csr(pins, boards, num_pins, num_boards, weights=None, timestamps=None) -> dict:
    """The specification, one edge at a time: merge repeats (weights summed in float64 in input
    order, earliest timestamp), pin-major order with boards ascending, pins ascending per board."""
    merged: dict[tuple[int, int], list] = {}
    for i, (p, b) in enumerate(zip(pins.tolist(), boards.tolist())):
        w = None if weights is None else float(weights[i])
        t = None if timestamps is None else int(timestamps[i])
        if (p, b) not in merged:
            merged[(p, b)] = [w, t]
        else:
            cur = merged[(p, b)]
            if w is not None:
                cur[0] = cur[0] + w  # python floats are float64
            if t is not None:
                cur[1] = min(cur[1], t)
    by_pin = sorted(merged)
    by_board = sorted(merged, key=lambda e: (e[1], e[0]))
    out: dict = {
        "pin_indptr": np.concatenate([[0], np.cumsum(np.bincount([p for p, _ in by_pin], minlength=num_pins))]),
        "pin_indices": np.array([b for _, b in by_pin], dtype=np.int64),
        "board_indptr": np.concatenate([[0], np.cumsum(np.bincount([b for _, b in by_board], minlength=num_boards))]),
        "board_indices": np.array([p for p, _ in by_board], dtype=np.int64),
    }
    for name, col, dtype, on in (("weights", 0, np.float32, weights), ("timestamps", 1, np.int64, timestamps)):
        out[f"pin_{name}"] = None if on is None else np.array([merged[e][col] for e in by_pin], dtype=dtype)
        out[f"board_{name}"] = None if on is None else np.array([merged[e][col] for e in by_board], dtype=dtype)
    out["num_duplicates"] = len(pins) - len(merged)
    return out


def assert_matches(got: csr.BipartiteCSR, want: dict, num_pins: int, num_boards: int) -> None:
    idx_dtype = index_dtype_for(num_pins, num_boards)
    assert got.num_duplicates == want["num_duplicates"]
    for name in FIELDS:
        g, w = getattr(got, name), want[name]
        if w is None:
            assert g is None, name
            continue
        assert isinstance(g, np.ndarray), name
        if name.endswith("indptr"):
            assert g.dtype == np.int64, name
        elif name.endswith("indices"):
            assert g.dtype == idx_dtype, name
        elif name.endswith("weights"):
            assert g.dtype == np.float32, name
        else:
            assert g.dtype == np.int64, name
        if name.endswith("weights"):  # float64 sums in another association order: ulps
            np.testing.assert_allclose(g, w, rtol=2e-7, atol=0, err_msg=name)
        else:
            np.testing.assert_array_equal(g, w.astype(g.dtype), err_msg=name)


def random_edges(rng: np.random.Generator, num_pins: int, num_boards: int, num_edges: int,
                 dup_share: float):
    pins = rng.integers(0, num_pins, num_edges)
    boards = rng.integers(0, num_boards, num_edges)
    k = int(num_edges * dup_share)
    if k and num_edges:  # repeat some earlier edges, at random later positions
        src = rng.integers(0, num_edges, k)
        dst = rng.integers(0, num_edges, k)
        pins[dst], boards[dst] = pins[src], boards[src]
    weights = (rng.random(num_edges) * 10.0 ** rng.integers(-4, 4, num_edges)).astype(np.float32)
    timestamps = rng.integers(-(1 << 40), 1 << 40, num_edges)
    return pins, boards, weights, timestamps


@pytest.fixture(params=["packed", "packed_threads", "packed_small_chunks", "key_argsort", "argsort",
                        "compiled", "compiled_threads"])
def path(request, monkeypatch):
    """Run the kernel on one of its code paths (results must not depend on it)."""
    if request.param.startswith("compiled"):
        if not compiled.available():
            pytest.skip("numba does not import: no compiled build")
        monkeypatch.setattr(csr, "COMPILED_MIN_EDGES", 0)
        monkeypatch.setattr(csr, "COMPILED_WARM_MIN_EDGES", 0)
        if request.param == "compiled_threads":  # more threads than the CPUs: parts of every size
            monkeypatch.setattr(compiled, "threads_for", lambda n, b: 3)
            monkeypatch.setattr(direction, "POPULATE_MIN_BYTES", 1)
    elif request.param == "packed_threads":
        monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 0)
    elif request.param == "packed_small_chunks":  # runs of repeats across chunks, mmap'd arrays
        monkeypatch.setattr(direction, "CHUNK", 5)
        monkeypatch.setattr(direction, "POPULATE_MIN_BYTES", 1)
        monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 0)
    elif request.param == "key_argsort":  # positions do not fit beside (pin, board): argsort
        monkeypatch.setattr(direction, "KEY_BITS", 20)
        monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 0)
    elif request.param == "argsort":
        def argsort_only(pins, boards, num_pins, num_boards, weights=None, timestamps=None):
            pins, boards = np.asarray(pins, np.int64), np.asarray(boards, np.int64)
            if weights is not None:
                weights = np.asarray(weights)
                weights = weights if weights.dtype == np.float32 else weights.astype(np.float64)
            if timestamps is not None:
                timestamps = np.asarray(timestamps, np.int64)
            return csr._build_by_argsort(pins, boards, num_pins, num_boards, weights, timestamps,
                                         index_dtype_for(num_pins, num_boards))
        return argsort_only
    else:
        monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 1 << 62)
    return build_bipartite_csr


@pytest.mark.parametrize("attrs", ["none", "weights", "timestamps", "both"])
@pytest.mark.parametrize("shape", [(1, 1, 5), (7, 5, 60), (40, 30, 500), (300, 3, 2000), (3, 500, 2000)])
def test_matches_naive_reference(path, attrs, shape):
    num_pins, num_boards, num_edges = shape
    rng = np.random.default_rng(hash((attrs, shape)) % 2**32)
    pins, boards, w, t = random_edges(rng, num_pins, num_boards, num_edges, dup_share=0.2)
    w = w if attrs in ("weights", "both") else None
    t = t if attrs in ("timestamps", "both") else None
    got = path(pins, boards, num_pins, num_boards, w, t)
    assert_matches(got, naive_csr(pins, boards, num_pins, num_boards, w, t), num_pins, num_boards)


def test_long_runs_of_one_edge(path):
    """Thousands of repeats of a few edges: sums in float64 in input order, as the reference."""
    rng = np.random.default_rng(3)
    pins = rng.integers(0, 2, 5000)
    boards = rng.integers(0, 2, 5000)
    w = (rng.random(5000) * 10.0 ** rng.integers(-8, 8, 5000)).astype(np.float32)
    t = rng.integers(0, 10**9, 5000)
    got = path(pins, boards, 3, 2, w, t)  # pin 2 has no edge
    assert_matches(got, naive_csr(pins, boards, 3, 2, w, t), 3, 2)


def test_no_duplicates_and_isolated_nodes(path):
    rng = np.random.default_rng(4)
    keys = rng.choice(50 * 40, size=300, replace=False)
    pins, boards = keys // 40 * 2, keys % 40 * 3  # odd ids have no edges
    w = rng.random(300, dtype=np.float32)
    got = path(pins, boards, 100, 120, w, None)
    assert got.num_duplicates == 0
    assert_matches(got, naive_csr(pins, boards, 100, 120, w, None), 100, 120)


def test_empty_edge_list(path):
    e = np.zeros(0, dtype=np.int64)
    got = path(e, e, 4, 3, np.zeros(0, np.float32), np.zeros(0, np.int64))
    assert_matches(got, naive_csr(e, e, 4, 3, np.zeros(0, np.float32), np.zeros(0, np.int64)), 4, 3)


@pytest.mark.parametrize("constant", ["weights", "timestamps", "both"])
def test_constant_attributes(path, constant):
    """All-equal columns (weights all 1.0, say) skip the gather: same results."""
    rng = np.random.default_rng(6)
    pins, boards, w, t = random_edges(rng, 30, 20, 400, dup_share=0.3)
    if constant in ("weights", "both"):
        w = np.full(400, 0.7, dtype=np.float32)
    if constant in ("timestamps", "both"):
        t = np.full(400, 12345, dtype=np.int64)
    got = path(pins, boards, 30, 20, w, t)
    assert_matches(got, naive_csr(pins, boards, 30, 20, w, t), 30, 20)
    assert got.pin_weights.flags.writeable and got.board_timestamps.flags.writeable


def test_signed_zero_weights_are_not_constant(path):
    pins, boards = np.array([0, 0, 1]), np.array([0, 0, 0])
    w = np.array([-0.0, 0.0, -0.0], dtype=np.float32)
    got = path(pins, boards, 2, 1, w, None)
    want = csr._build_by_argsort(pins, boards, 2, 1, w, None, index_dtype_for(2, 1))
    np.testing.assert_array_equal(np.signbit(got.pin_weights), np.signbit(want.pin_weights))
    np.testing.assert_array_equal(np.signbit(got.board_weights), np.signbit(want.board_weights))


def test_float64_weights_are_summed_in_float64(path):
    pins = np.array([0, 0, 0, 1])
    boards = np.array([0, 0, 0, 0])
    w = np.array([1.0, 1e-9, 1e-9, 0.5])  # float32 first would lose the small terms differently
    got = path(pins, boards, 2, 1, w, None)
    assert_matches(got, naive_csr(pins, boards, 2, 1, w, None), 2, 1)


@given(st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.floats(0, 100, width=32),
                          st.integers(-50, 50)), max_size=60),
       st.sampled_from(["packed", "threads", "argsort"]))
def test_property_against_reference(edges, which):
    pins = np.array([e[0] for e in edges], dtype=np.int64)
    boards = np.array([e[1] for e in edges], dtype=np.int64)
    w = np.array([e[2] for e in edges], dtype=np.float32)
    t = np.array([e[3] for e in edges], dtype=np.int64)
    old = csr._PARALLEL_MIN_EDGES
    try:
        csr._PARALLEL_MIN_EDGES = 0 if which == "threads" else 1 << 62
        if which == "argsort":
            got = csr._build_by_argsort(pins, boards, 7, 5, w, t, index_dtype_for(7, 5))
        else:
            got = build_bipartite_csr(pins, boards, 7, 5, w, t)
    finally:
        csr._PARALLEL_MIN_EDGES = old
    assert_matches(got, naive_csr(pins, boards, 7, 5, w, t), 7, 5)


@pytest.mark.parametrize("threads", [False, True])
@pytest.mark.parametrize("key_bits", [63, 20])
def test_fast_paths_equal_argsort_path_bit_for_bit(monkeypatch, threads, key_bits):
    """The packed sort (and the key argsort) reproduce the stable-argsort algorithm exactly,
    float sums included."""
    monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 0 if threads else 1 << 62)
    monkeypatch.setattr(direction, "KEY_BITS", key_bits)
    rng = np.random.default_rng(5)
    for num_pins, num_boards, num_edges, dup in ((5, 3, 4000, 0.0), (200, 50, 20000, 0.3), (3000, 2, 9000, 0.1)):
        pins, boards, w, t = random_edges(rng, num_pins, num_boards, num_edges, dup)
        for weights in (w, w.astype(np.float64), np.ones_like(w)):
            got = build_bipartite_csr(pins, boards, num_pins, num_boards, weights, t)
            want = csr._build_by_argsort(pins, boards, num_pins, num_boards,
                                         weights if weights.dtype == np.float32 else weights.astype(np.float64),
                                         t, index_dtype_for(num_pins, num_boards))
            assert got.num_duplicates == want.num_duplicates
            for name in FIELDS:
                g, e = getattr(got, name), getattr(want, name)
                assert g.dtype == e.dtype, name
                np.testing.assert_array_equal(g, e, err_msg=name)


def test_index_dtype_and_packing_bounds():
    assert index_dtype_for(2**31 - 1, 5) == np.int32
    assert index_dtype_for(5, 2**31) == np.int64
    assert direction.bits(1) == 1 and direction.bits(2) == 1 and direction.bits(3) == 2 and direction.bits(2**20) == 20


def _whole_array_build(monkeypatch, *args):
    """The build as it was before the chunked kernel: ``_sorted_direction_whole`` per direction."""
    with monkeypatch.context() as m:
        m.setattr(direction, "sorted_direction", direction.sorted_direction_whole)
        return build_bipartite_csr(*args)


def assert_identical(got: csr.BipartiteCSR, want: csr.BipartiteCSR) -> None:
    assert got.num_duplicates == want.num_duplicates
    for name in FIELDS:
        g, e = getattr(got, name), getattr(want, name)
        if e is None:
            assert g is None, name
            continue
        assert g.dtype == e.dtype and g.shape == e.shape, name
        assert g.tobytes() == e.tobytes(), name
        assert g.flags.c_contiguous and g.flags.writeable, name


@pytest.mark.parametrize("chunk", [1, 3, 64, 1 << 16])
@pytest.mark.parametrize("threads", [False, True])
def test_chunked_kernel_equals_whole_array_kernel_bit_for_bit(monkeypatch, chunk, threads):
    """The chunked direction kernel (repeats dropped chunk by chunk, runs merged afterwards,
    arrays pre-faulted) gives the bytes of the whole-array kernel it replaced, on every kind of
    input: runs across chunk boundaries, long runs, no repeats, constant and float64 columns."""
    monkeypatch.setattr(direction, "CHUNK", chunk)
    monkeypatch.setattr(csr, "_PARALLEL_MIN_EDGES", 0 if threads else 1 << 62)
    monkeypatch.setattr(direction, "POPULATE_MIN_BYTES", 1 if chunk == 3 else 1 << 22)
    rng = np.random.default_rng(chunk + threads)
    cases = [(5, 3, 400, 0.0), (60, 40, 3000, 0.3), (2, 2, 500, 0.9), (3000, 2, 2000, 0.1),
             (1, 1, 7, 0.0), (40, 30, 1, 0.0)]
    for num_pins, num_boards, num_edges, dup in cases:
        pins, boards, w, t = random_edges(rng, num_pins, num_boards, num_edges, dup)
        for weights in (None, w, w.astype(np.float64), np.full_like(w, 0.7), np.full(num_edges, 0.1)):
            for timestamps in (None, t, np.full_like(t, 12345)):
                args = (pins, boards, num_pins, num_boards, weights, timestamps)
                assert_identical(build_bipartite_csr(*args), _whole_array_build(monkeypatch, *args))


def test_key_overflow_takes_the_fallbacks(monkeypatch):
    """Id spaces too large for the packed key, simulated with a narrower key (real ones need
    indptrs of billions of entries): positions that do not fit beside (pin, board) (stable
    argsort of the key in the whole-array kernel), then (pin, board) alone not fitting
    (``_build_by_argsort``). Same results as the packed build."""
    rng = np.random.default_rng(11)
    num_pins, num_boards = 3000, 40  # 12 + 6 bits of (pin, board), 12 bits of positions
    pins, boards, w, t = random_edges(rng, num_pins, num_boards, 3000, 0.3)
    args = (pins, boards, num_pins, num_boards, w, t)
    packed = build_bipartite_csr(*args)
    monkeypatch.setattr(direction, "KEY_BITS", 25)
    assert_identical(build_bipartite_csr(*args), packed)
    for constant in (np.full_like(w, 2.5), None):  # no gather needed: the chunked kernel, no positions
        assert_identical(build_bipartite_csr(pins, boards, num_pins, num_boards, constant, None),
                         _whole_array_build(monkeypatch, pins, boards, num_pins, num_boards, constant, None))
    monkeypatch.setattr(direction, "KEY_BITS", 16)
    assert_identical(build_bipartite_csr(*args), packed)


def test_arange_prefaulted(monkeypatch):
    monkeypatch.setattr(direction, "POPULATE_MIN_BYTES", 1)
    for n in (0, 1, 5, (1 << 16) + 3, 3 << 17):
        ids = direction.arange_prefaulted(n)
        assert ids.dtype == np.int64 and ids.tobytes() == np.arange(n, dtype=np.int64).tobytes()


@pytest.mark.parametrize("parts", [1, 3])
def test_prefaulted_arrays(monkeypatch, parts):
    """One populated mapping, or (a pool, several parts) one madvise a part on the pool's threads."""
    monkeypatch.setattr(direction, "POPULATE_MIN_BYTES", 1)
    calls = []
    with ThreadPoolExecutor(max_workers=2) as pool:
        real_map = pool.map
        monkeypatch.setattr(pool, "map", lambda f, it: calls.append(1) or real_map(f, it))
        for n, dtype in ((0, np.int64), (1, np.float32), (12345, np.int32), (3 << 20, np.int64)):
            a = direction.empty_prefaulted(n, dtype, pool, parts)
            assert a.shape == (n,) and a.dtype == dtype and a.flags.writeable and a.flags.c_contiguous
            assert not a.any()  # anonymous pages read as zeros
            a[:] = 7
            assert (a == 7).all()
    assert len(calls) == (3 if parts > 1 and direction._libc_madvise() else 0)
