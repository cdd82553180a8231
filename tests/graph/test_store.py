"""PinBoardGraph: construction against scipy / networkx references, persistence, splits."""
from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import numpy as np
import pyarrow as pa
import pytest

from graph.output_dir import OutputDirError
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from graph import GraphStoreError, PinBoardGraph, make_splits
from graph.csr import INT32_MAX, board_edge_ids, index_dtype_for
from graph.features import FeatureStore, ImageRootError
from graph.splits import COLD, TEST, TRAIN, VAL
from graph.storage import MANIFEST, file_record


# ---------------------------------------------------------------------------- construction
@st.composite
def edge_lists(draw):
    """(P, B, [(pin, board, weight, timestamp)]) with repeated edges and isolated nodes."""
    num_pins = draw(st.integers(1, 25))
    num_boards = draw(st.integers(1, 15))
    edges = draw(st.lists(st.tuples(st.integers(0, num_pins - 1), st.integers(0, num_boards - 1),
                                    st.integers(1, 8), st.integers(-5, 1000)), max_size=120))
    extra_p = draw(st.integers(0, 3))  # isolated nodes beyond the largest id
    extra_b = draw(st.integers(0, 3))
    return num_pins + extra_p, num_boards + extra_b, edges


@settings(max_examples=40, deadline=None)
@given(edge_lists())
def test_from_edges_matches_scipy_and_networkx(case):
    P, B, edges = case
    pins = np.array([e[0] for e in edges], np.int64)
    boards = np.array([e[1] for e in edges], np.int64)
    w = np.array([e[2] / 4 for e in edges], np.float32)  # quarters: sums are exact in float32
    t = np.array([e[3] for e in edges], np.int64)
    g = PinBoardGraph.from_edges(torch.from_numpy(pins), boards, num_pins=P, num_boards=B,
                                 weights=w, timestamps=t)

    # scipy reference: duplicate entries are summed by tocsr()
    ref = sp.coo_array((w.astype(np.float64), (pins, boards)), shape=(P, B)).tocsr()
    ref.sum_duplicates()
    ref.sort_indices()
    assert (g.num_pins, g.num_boards, g.num_edges) == (P, B, ref.nnz)
    np.testing.assert_array_equal(g.pin_indptr.numpy(), ref.indptr)
    np.testing.assert_array_equal(g.pin_indices.numpy(), ref.indices)
    np.testing.assert_array_equal(g.pin_weights.numpy(), ref.data.astype(np.float32))
    refT = ref.T.tocsr()
    refT.sort_indices()
    np.testing.assert_array_equal(g.board_indptr.numpy(), refT.indptr)
    np.testing.assert_array_equal(g.board_indices.numpy(), refT.indices)
    np.testing.assert_array_equal(g.board_weights.numpy(), refT.data.astype(np.float32))

    # networkx reference: neighbors and degrees of every node, both directions
    G = nx.Graph()
    G.add_nodes_from(("p", i) for i in range(P))
    G.add_nodes_from(("b", j) for j in range(B))
    G.add_edges_from((("p", int(p)), ("b", int(b))) for p, b in zip(pins, boards))
    for i in range(P):
        nbrs = sorted(j for _, j in G.neighbors(("p", i)))
        assert g.boards_of(i).tolist() == nbrs
        assert int(g.pin_degrees()[i]) == G.degree(("p", i))
    for j in range(B):
        nbrs = sorted(i for _, i in G.neighbors(("b", j)))
        assert g.pins_of(j).tolist() == nbrs
        assert int(g.board_degrees()[j]) == G.degree(("b", j))

    # timestamps: the earliest of repeated edges, in both directions
    earliest: dict[tuple[int, int], int] = {}
    for p, b, ts in zip(pins.tolist(), boards.tolist(), t.tolist()):
        earliest[(p, b)] = min(ts, earliest.get((p, b), ts))
    ep, eb = g.edges()
    assert [earliest[(p, b)] for p, b in zip(ep.tolist(), eb.tolist())] == g.pin_timestamps.tolist()
    # the board view lists the same edges: map each board-major entry to its edge id
    eid = board_edge_ids(*(x.numpy() for x in (g.pin_indptr, g.pin_indices, g.board_indptr, g.board_indices)))
    np.testing.assert_array_equal(g.board_timestamps.numpy(), g.pin_timestamps.numpy()[eid])
    np.testing.assert_array_equal(g.board_weights.numpy(), g.pin_weights.numpy()[eid])
    np.testing.assert_array_equal(eb.numpy()[eid], np.repeat(np.arange(B), g.board_degrees().numpy()))

    # sortedness: strictly ascending neighbors within each row (no duplicates left)
    for indptr, indices in ((g.pin_indptr, g.pin_indices), (g.board_indptr, g.board_indices)):
        ptr, idx = indptr.numpy(), indices.numpy()
        for r in range(len(ptr) - 1):
            assert np.all(np.diff(idx[ptr[r]:ptr[r + 1]]) > 0)
    assert g.pin_indptr.dtype == torch.int64 and g.pin_indices.dtype == torch.int32


def test_from_edges_without_weights_and_default_counts():
    g = PinBoardGraph.from_edges([0, 2, 2, 2], [1, 0, 0, 3])
    assert (g.num_pins, g.num_boards, g.num_edges) == (3, 4, 3)
    assert g.pin_weights is None and g.pin_timestamps is None
    assert g.boards_of(1).tolist() == [] and g.pins_of(0).tolist() == [2]


@pytest.mark.parametrize("kwargs, match", [
    (dict(pin_ids=[0, -1], board_ids=[0, 0]), "negative id -1 at position 1"),
    (dict(pin_ids=[0, 5], board_ids=[0, 0], num_pins=3), "id 5 at position 1 is out of range"),
    (dict(pin_ids=[0.5], board_ids=[0]), "expected integer ids"),
    (dict(pin_ids=[0, 1], board_ids=[0]), "pin_ids has 2 edges but board_ids has 1"),
    (dict(pin_ids=[0], board_ids=[0], weights=[float("nan")]), "invalid weight nan at edge 0"),
    (dict(pin_ids=[0], board_ids=[0], weights=[-1.0]), "invalid weight -1.0"),
    (dict(pin_ids=[0, 1], board_ids=[0, 0], weights=[1.0, float("inf")]), "invalid weight inf at edge 1"),
    (dict(pin_ids=[0, 1], board_ids=[0, 0], weights=[-0.0, float("-inf")]), "invalid weight -inf at edge 1"),
    (dict(pin_ids=[0], board_ids=[0], timestamps=[1.5]), "timestamps: expected integers"),
    (dict(pin_ids=[0, 1], board_ids=[0, 0], pin_external_ids=["a", "a"]), "duplicate external id 'a'"),
    (dict(pin_ids=[0, 1], board_ids=[0, 0], pin_external_ids=["a", None]), "null external id at position 1"),
    (dict(pin_ids=[0, 1], board_ids=[0, 0], pin_external_ids=["a"]), "1 external ids for 2 nodes"),
])
def test_from_edges_rejects_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PinBoardGraph.from_edges(**kwargs)


def test_index_dtype_selection():
    assert index_dtype_for(10, 10) == np.int32
    assert index_dtype_for(INT32_MAX, INT32_MAX) == np.int32
    assert index_dtype_for(INT32_MAX + 1, 3) == np.int64
    assert index_dtype_for(3, INT32_MAX + 1) == np.int64
    assert INT32_MAX == 2**31 - 1


def test_id_maps(small_graph):
    g = small_graph
    assert g.pin_index(["pin-3", "pin-0"]).tolist() == [3, 0]
    assert g.external_pin_ids([3, 0]) == ["pin-3", "pin-0"]
    assert g.board_index([4]).tolist() == [4]
    with pytest.raises(KeyError, match="unknown pin id 'nope'"):
        g.pin_index(["pin-1", "nope"])


# ---------------------------------------------------------------------------- save / open
def _with_extras(g: PinBoardGraph) -> PinBoardGraph:
    P, B = g.num_pins, g.num_boards
    g.features = FeatureStore(
        pa.table({"text": pa.array([f"text {i}" if i % 3 else None for i in range(P)], pa.large_string()),
                  "image": pa.array([f"img/{i}.png" for i in range(P)], pa.large_string()),
                  "fresh": pa.array([i % 7 == 0 for i in range(P)])}),
        pa.table({"name": pa.array([f"board {j}" for j in range(B)], pa.large_string())}),
        root=Path("/data/world"))
    g.splits = make_splits(g, 0.1, 0.1, 0.2, seed=3)
    g.manifest["source"] = {"dataset_dir": "/data/world"}
    return g


def _assert_same_graph(a: PinBoardGraph, b: PinBoardGraph) -> None:
    assert (a.num_pins, a.num_boards, a.num_edges) == (b.num_pins, b.num_boards, b.num_edges)
    for name in ("pin_indptr", "pin_indices", "board_indptr", "board_indices", "pin_weights",
                 "board_weights", "pin_timestamps", "board_timestamps"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert a.pin_ids.equals(b.pin_ids) and a.board_ids.equals(b.board_ids)


@pytest.mark.parametrize("verify", ["fast", "full", "none"])
def test_save_open_round_trip(tmp_path, small_graph, verify):
    g = _with_extras(small_graph)
    g.save(tmp_path / "store")
    h = PinBoardGraph.open(tmp_path / "store", verify=verify)
    _assert_same_graph(g, h)
    assert h.pin_ids.type == pa.large_string() and h.external_pin_ids([7]) == ["pin-7"]
    assert h.features.pins.equals(g.features.pins) and h.features.boards.equals(g.features.boards)
    assert h.features.root == Path("/data/world")
    with pytest.raises(ImageRootError, match="/data/world"):   # no such directory here
        h.features.pin_image_paths([2])
    moved = PinBoardGraph.open(tmp_path / "store", verify=verify, image_root=tmp_path)
    assert moved.features.pin_image_paths([2]) == [tmp_path / "img/2.png"]
    np.testing.assert_array_equal(h.splits.edge_split, g.splits.edge_split)
    np.testing.assert_array_equal(h.splits.cold_start_pins, g.splits.cold_start_pins)
    assert h.splits.params == g.splits.params
    assert h.manifest["source"] == {"dataset_dir": "/data/world"}
    assert h.path == tmp_path / "store"
    # memory-mapped, not read into memory
    assert isinstance(h.csr_numpy().pin_indices, np.memmap)


def test_round_trip_int_ids_no_weights_and_empty_edges(tmp_path):
    g = PinBoardGraph.from_edges([], [], num_pins=3, num_boards=2, pin_external_ids=[7, 8, 9])
    g.splits = make_splits(g, seed=0)  # no edges: empty split arrays must round-trip too
    g.save(tmp_path / "s")
    h = PinBoardGraph.open(tmp_path / "s", verify="full")
    _assert_same_graph(g, h)
    assert h.pin_ids.to_pylist() == [7, 8, 9] and h.splits.edge_split.shape == (0,)
    assert h.splits.cold_start_pins.shape == (0,)


def test_save_replaces_an_existing_store(tmp_path, small_graph):
    small_graph.save(tmp_path / "s")
    other = PinBoardGraph.from_edges([0], [0])
    other.save(tmp_path / "s")
    assert PinBoardGraph.open(tmp_path / "s").num_edges == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]  # no temporary leftovers


def test_save_refuses_to_replace_a_directory_that_is_not_a_store(tmp_path, small_graph):
    target = tmp_path / "mydir"
    target.mkdir()
    (target / "precious.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="not a graph store"):
        small_graph.save(target)
    assert (target / "precious.txt").read_text() == "keep me"
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputDirError, match="not a directory"):
        small_graph.save(tmp_path / "afile")
    empty = tmp_path / "empty"
    empty.mkdir()
    small_graph.save(empty)  # an empty directory is fine
    assert PinBoardGraph.open(empty).num_edges == small_graph.num_edges


# ---------------------------------------------------------------------------- corruption
@pytest.fixture
def store(tmp_path, small_graph) -> Path:
    _with_extras(small_graph).save(tmp_path / "store")
    return tmp_path / "store"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("verify", ["fast", "full"])
@pytest.mark.parametrize("damage, file, match", [
    ("truncate", "pin_indices.npy", "truncated or resized"),
    ("flip", "board_indices.npy", "corrupted"),
    ("flip", "pin_weights.npy", "corrupted"),
    ("flip", "pin_ids.arrow", "corrupted"),
    ("flip", "pin_features.arrow", "corrupted"),
    ("flip", "split_edge.npy", "corrupted"),
    ("delete", "board_indptr.npy", "missing from graph store"),
    ("delete", "board_features.arrow", "missing from graph store"),
])
def test_damaged_file_is_named(store, damage, file, match, verify):
    path = store / file
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:-5])
    elif damage == "flip":
        _flip(path, path.stat().st_size // 2)
    else:
        path.unlink()
    with pytest.raises(GraphStoreError, match=match) as exc:
        PinBoardGraph.open(store, verify=verify)
    assert str(path) in str(exc.value)


def test_fast_verify_samples_blocks_full_verify_reads_everything(tmp_path):
    # 400k int32 indices = 1.6 MB: more than the 16 sampled 64 KiB blocks.
    rng = np.random.default_rng(0)
    pins = np.repeat(np.arange(40_000), 10)
    boards = rng.integers(0, 5_000, pins.size)
    PinBoardGraph.from_edges(pins, boards).save(tmp_path / "s")
    path = tmp_path / "s" / "board_indices.npy"
    from graph.storage import SAMPLE_BLOCK, _sample_offsets
    size = path.stat().st_size
    starts = _sample_offsets(size)
    gap = next(s + SAMPLE_BLOCK for s, e in zip(starts, starts[1:]) if e - s > SAMPLE_BLOCK + 16)
    _flip(path, gap + 8)  # a byte between two sampled blocks
    PinBoardGraph.open(tmp_path / "s")  # fast check: constant time, does not see it
    with pytest.raises(GraphStoreError, match=r"board_indices\.npy: corrupted \(CRC32 mismatch\)"):
        PinBoardGraph.open(tmp_path / "s", verify="full")


def _edit_manifest(store: Path, edit) -> None:
    m = json.loads((store / MANIFEST).read_text())
    edit(m)
    (store / MANIFEST).write_text(json.dumps(m))


@pytest.mark.parametrize("content, match", [
    ("{not json", "corrupted manifest"),
    ("[1, 2]", "expected a JSON object"),
    ('{"format": "something-else", "format_version": 1}', "not a pinclip-graph manifest"),
    ('{"format": "pinclip-graph", "format_version": 99}', "format_version 99 is not supported"),
    ('{"format": "pinclip-graph", "format_version": 1}', "missing key 'arrays'"),
])
def test_bad_manifest_is_named(store, content, match):
    (store / MANIFEST).write_text(content)
    with pytest.raises(GraphStoreError, match=match) as exc:
        PinBoardGraph.open(store)
    assert str(store / MANIFEST) in str(exc.value)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(num_edges="many"), "malformed manifest"),
    (lambda m: m.update(num_edges=m["num_edges"] + 1), r"_indices\.npy: shape \(\d+,\), expected"),
    (lambda m: m["arrays"]["pin_indptr"].update(file="../../etc/passwd"), "invalid file name"),
    (lambda m: m["arrays"].pop("board_weights"), "has pin_weights.npy but no record for board_weights.npy"),
    (lambda m: m["arrays"].pop("pin_indices"), r"no record for pin_indices\.npy"),
    (lambda m: m.update(arrays=[]), "malformed manifest"),
])
def test_inconsistent_manifest_is_named(store, edit, match):
    _edit_manifest(store, edit)
    with pytest.raises(GraphStoreError, match=match):
        PinBoardGraph.open(store)


def test_full_verify_checks_structure(store):
    # a consistent file (checksums rewritten) whose content breaks the CSR invariants
    path = store / "pin_indices.npy"
    arr = np.load(path)
    arr[0] = 10_000
    np.save(path, arr)
    _edit_manifest(store, lambda m: m["arrays"]["pin_indices"].update(file_record(path)))
    PinBoardGraph.open(store, verify="none")  # sizes and headers agree
    with pytest.raises(GraphStoreError, match=r"pin_indices\.npy: .*index out of range \[0, 13\): 10000 at position 0; "
                       "its checksums match"):
        PinBoardGraph.open(store, verify="full")


def test_directory_without_manifest_is_not_a_store(tmp_path, store):
    # what an interrupted build leaves: a temp dir with arrays but no manifest
    tmp = tmp_path / ".store.tmp-abc"
    tmp.mkdir()
    for f in store.iterdir():
        if f.name != MANIFEST:
            (tmp / f.name).write_bytes(f.read_bytes())
    with pytest.raises(GraphStoreError, match="not a finished graph store"):
        PinBoardGraph.open(tmp)
    with pytest.raises(GraphStoreError, match="no such graph store directory"):
        PinBoardGraph.open(tmp_path / "nothing")
    with pytest.raises(ValueError, match="verify="):
        PinBoardGraph.open(store, verify="sometimes")


# ---------------------------------------------------------------------------- splits
@pytest.fixture(scope="module")
def split_graph() -> PinBoardGraph:
    rng = np.random.default_rng(1)
    deg = rng.integers(1, 12, 3000)
    pins = np.repeat(np.arange(3000), deg)
    boards = rng.integers(0, 400, pins.size)
    return PinBoardGraph.from_edges(pins, boards, num_pins=3050, weights=np.ones(pins.size))


def test_splits_deterministic_by_seed(split_graph):
    a = make_splits(split_graph, seed=5)
    b = make_splits(split_graph, seed=5)
    c = make_splits(split_graph, seed=6)
    np.testing.assert_array_equal(a.edge_split, b.edge_split)
    np.testing.assert_array_equal(a.cold_start_pins, b.cold_start_pins)
    assert not np.array_equal(a.edge_split, c.edge_split)


@pytest.mark.parametrize("fresh", [False, True])
def test_split_invariants(split_graph, fresh):
    g = split_graph
    P = g.num_pins
    fresh_pins = (np.arange(P) % 9 == 0) if fresh else None
    s = make_splits(g, val_fraction=0.1, test_fraction=0.05, cold_start_fraction=0.2, seed=2,
                    fresh_pins=fresh_pins)
    deg = g.pin_degrees().numpy()
    edge_pin = g.edges()[0].numpy()
    split = np.asarray(s.edge_split)
    is_cold = s.is_cold_start(P).numpy()
    if fresh:
        np.testing.assert_array_equal(is_cold, fresh_pins)
        assert s.params["cold_start_source"] == "fresh_flag"
    else:
        # a random 20% of the pins that have edges
        assert abs(is_cold.sum() - 0.2 * (deg > 0).sum()) <= 1
        assert not is_cold[deg == 0].any()
    # cold-start pins: all their edges, and only theirs, are COLD
    np.testing.assert_array_equal(split == COLD, is_cold[edge_pin])
    # every warm pin with edges keeps at least one training edge
    train_deg = np.bincount(edge_pin[split == TRAIN], minlength=P)
    assert np.all(train_deg[(deg > 0) & ~is_cold] >= 1)
    # held-out edges only on warm pins with >= 2 edges; fractions roughly right among those
    eligible = ~is_cold[edge_pin] & (deg[edge_pin] >= 2)
    assert not np.any(np.isin(split[~eligible], [VAL, TEST]))
    assert abs((split[eligible] == VAL).mean() - 0.1) < 0.02
    assert abs((split[eligible] == TEST).mean() - 0.05) < 0.015
    c = s.counts()
    assert sum(c[k] for k in ("train", "val", "test", "cold_start")) == g.num_edges


def test_train_graph_has_no_cold_or_held_out_edges(split_graph):
    g = split_graph
    g.splits = make_splits(g, 0.1, 0.1, 0.1, seed=0)
    try:
        t = g.train_graph()
        split = np.asarray(g.splits.edge_split)
        assert t.num_edges == int((split == TRAIN).sum())
        assert (t.num_pins, t.num_boards) == (g.num_pins, g.num_boards)
        ep, eb = g.edges()
        train_pairs = set(zip(ep.numpy()[split == TRAIN].tolist(), eb.numpy()[split == TRAIN].tolist()))
        tp, tb = t.edges()
        assert set(zip(tp.tolist(), tb.tolist())) == train_pairs
        cold = g.splits.cold_start_pins
        assert int(t.pin_degrees()[torch.from_numpy(np.asarray(cold))].sum()) == 0
        assert t.pin_weights is not None and t.splits is None
    finally:
        g.splits = None
    with pytest.raises(ValueError, match="no splits"):
        g.train_graph()


@pytest.mark.parametrize("kwargs, match", [
    (dict(val_fraction=1.0), "val_fraction=1.0 must be in"),
    (dict(val_fraction=0.6, test_fraction=0.5), "must be < 1"),
    (dict(cold_start_fraction=-0.1), "cold_start_fraction"),
])
def test_split_fractions_are_checked(small_graph, kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_splits(small_graph, **kwargs)


# ---------------------------------------------------------------------------- id hints
def test_sparse_ids_get_a_hint_instead_of_a_huge_allocation():
    import time

    from graph.errors import InputError

    t0 = time.perf_counter()
    with pytest.raises(InputError, match=r"pin_ids: the largest id is 1,099,511,627,776 but there are only 2 edges") as exc:
        PinBoardGraph.from_edges([0, 2**40], [0, 1])        # would be ~8 TiB of indptr
    msg = str(exc.value)
    assert "~8.0 TiB" in msg and "pass num_pins explicitly" in msg and "maps arbitrary ids to dense ones" in msg
    assert time.perf_counter() - t0 < 1.0
    # distinct ids counted exactly when there are few edges: 400k edges (more than 20M / 64)
    # over 2 distinct board ids, the largest 20M
    n = 400_000
    with pytest.raises(InputError, match=r"board_ids: .* only 2 distinct ids: with num_boards=None"):
        PinBoardGraph.from_edges(np.arange(n) % 1000, np.where(np.arange(n) % 2, 20_000_000, 0))
    # dense enough, or small: built as before
    assert PinBoardGraph.from_edges([0, 5_000_000], [0, 1]).num_pins == 5_000_001
    assert PinBoardGraph.from_edges(np.arange(1000) * 60, np.zeros(1000, np.int64)).num_pins == 59_941


def test_uint64_ids_beyond_int64_are_too_large_not_negative():
    from graph.errors import InputError

    with pytest.raises(InputError, match=r"pin_ids: id 9223372036854775808 at position 1 is too large \(>= 2\^63\)"):
        PinBoardGraph.from_edges(np.array([3, 2**63], np.uint64), [0, 1])
    with pytest.raises(InputError, match=r"external id 18446744073709551615 at position 1 is too large"):
        PinBoardGraph.from_edges([0, 1], [0, 0], pin_external_ids=pa.array([7, 2**64 - 1], pa.uint64()))
    g = PinBoardGraph.from_edges(np.array([0, 1], np.uint64), [0, 0], pin_external_ids=pa.array([7, 8], pa.uint64()))
    assert g.pin_ids.type == pa.int64() and g.pin_ids.to_pylist() == [7, 8]


def test_from_edges_accepts_signed_zero_weights():
    """-0.0 has the sign bit set (the fast weight check says "look closer") but is valid."""
    g = PinBoardGraph.from_edges([0, 1], [0, 0], weights=np.array([-0.0, 2.0], dtype=np.float32))
    assert g.pin_weights.tolist() == [0.0, 2.0] and np.signbit(g.pin_weights.numpy()[0])
