"""Out-of-core build: byte-identical to the in-memory build, same errors, atomic, CLI flag."""
from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

import graph.external_build as eb
from graph import PinBoardGraph
from graph.buckets import EdgeBuckets, NpyAppender, balanced_bounds, record_dtype
from graph.dataset import DatasetError, build_graph_from_dataset, load_dataset_graph
from graph.external_build import BuildPlan, build_graph_external, parse_bytes, plan_build

# Groups of at most 7 edges, chunks of 13 rows: dozens of buckets, splits and groups even on
# a few hundred edges, so every boundary case of the bucketing is crossed.
TINY = BuildPlan(memory_budget=1, working_bytes=1, chunk_rows=13, sort_edges=7, num_buckets=9)


def random_dataset(directory: Path, helpers, fmt: str = "parquet", string_ids: bool = False,
                   weights: bool = True, timestamps: bool = True, fresh: bool = False,
                   num_pins: int = 60, num_boards: int = 15, num_edges: int = 400, seed: int = 0) -> Path:
    """A dataset with repeated edges, isolated pins and boards, non-dense ids in shuffled order."""
    rng = np.random.default_rng(seed)
    pin_ext = rng.permutation(num_pins) * 7 + 3
    board_ext = rng.permutation(num_boards) * 5 + 1
    if string_ids:
        pin_ext = np.array([f"pin-{v}" for v in pin_ext], dtype=object)
        board_ext = np.array([f"b{v}" for v in board_ext], dtype=object)
    # Edges only on the first 4/5 of the pins and boards: the rest stay isolated.
    p = rng.integers(0, num_pins * 4 // 5, num_edges)
    b = rng.integers(0, num_boards * 4 // 5, num_edges)
    edges = {"pin_id": pin_ext[p].tolist(), "board_id": board_ext[b].tolist()}
    if weights:  # not float32-exact: the float64 sum order of repeats shows in the bits
        edges["weight"] = rng.random(num_edges).tolist()
    if timestamps:
        edges["timestamp"] = rng.integers(0, 50, num_edges).tolist()
    pins = {"pin_id": pin_ext.tolist(), "text": [f"t{i}" if i % 3 else None for i in range(num_pins)],
            "image": [None] * num_pins}
    if fresh:
        pins["fresh"] = (rng.random(num_pins) < 0.2).tolist()
    boards = {"board_id": board_ext.tolist(), "name": [f"n{i}" for i in range(num_boards)]}
    return helpers.write_dataset(directory, fmt, tables={"pins": pins, "boards": boards, "edges": edges})


def assert_same_store(a: Path, b: Path, helpers) -> None:
    assert helpers.tree_digest(a) == helpers.tree_digest(b)
    assert json.loads((a / "manifest.json").read_text()) == json.loads((b / "manifest.json").read_text())


def both_builds(data: Path, tmp_path: Path, plan: BuildPlan | None = TINY, **kw) -> tuple[Path, Path]:
    mem, ext = tmp_path / "mem", tmp_path / "ext"
    load_dataset_graph(data, progress=False, **kw).save(mem)
    build_graph_external(data, ext, progress=False, plan=plan, **kw)
    return mem, ext


# ---------------------------------------------------------------------------- identical stores
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("string_ids", [False, True], ids=["int_ids", "string_ids"])
@pytest.mark.parametrize("weights,timestamps", [(False, False), (True, False), (False, True), (True, True)],
                         ids=["topology", "weights", "timestamps", "both"])
def test_identical_to_in_memory_build(tmp_path, helpers, fmt, string_ids, weights, timestamps):
    data = random_dataset(tmp_path / "data", helpers, fmt, string_ids, weights, timestamps,
                          seed=len(fmt) + 2 * string_ids + 4 * weights + 8 * timestamps)
    mem, ext = both_builds(data, tmp_path)
    assert_same_store(mem, ext, helpers)
    g = PinBoardGraph.open(ext, verify="full")
    assert g.manifest["source"]["duplicate_edges_merged"] > 0  # the data did have repeats


@pytest.mark.parametrize("kw", [{}, {"cold_start_fraction": 0.3, "val_fraction": 0.2, "test_fraction": 0.1, "seed": 5}],
                         ids=["fresh_flags", "random_cold_start"])
def test_identical_splits(tmp_path, helpers, kw):
    data = random_dataset(tmp_path / "data", helpers, fresh=True, num_edges=600, seed=3)
    mem, ext = both_builds(data, tmp_path, **kw)
    assert_same_store(mem, ext, helpers)
    splits = PinBoardGraph.open(ext).splits
    assert set(np.unique(splits.edge_split)) == {0, 1, 2, 3}


@pytest.mark.parametrize("plan", [None, BuildPlan(1, 1, 1, 1, 1), BuildPlan(1, 1, 1000, 50, 4096)],
                         ids=["default_budget", "one_edge_groups", "many_buckets"])
def test_identical_whatever_the_plan(tmp_path, helpers, plan):
    data = random_dataset(tmp_path / "data", helpers, num_edges=300, seed=7)
    mem, ext = both_builds(data, tmp_path, plan=plan)
    assert_same_store(mem, ext, helpers)


def test_default_dataset_and_power_law_hubs(tmp_path, helpers):
    # The shared 4-pin dataset (string boards, fresh flags), then a hub board holding half of
    # all edges: bigger than any group, so its bucket is split down to the single board.
    data = helpers.write_dataset(tmp_path / "small", "csv")
    mem, ext = both_builds(data, tmp_path / "a")
    assert_same_store(mem, ext, helpers)
    rng = np.random.default_rng(1)
    n = 500
    edges = {"pin_id": rng.integers(0, 80, n).tolist(),
             "board_id": np.where(rng.random(n) < 0.5, 0, rng.integers(0, 20, n)).tolist(),
             "weight": rng.random(n).tolist()}
    data = helpers.write_dataset(tmp_path / "hub", "parquet", tables={
        "pins": {"pin_id": list(range(80)), "text": [None] * 80, "image": [None] * 80},
        "boards": {"board_id": list(range(20)), "name": [None] * 20}, "edges": edges})
    mem, ext = both_builds(data, tmp_path / "b", plan=BuildPlan(1, 1, 50, 20, 3))
    assert_same_store(mem, ext, helpers)


def test_repeat_sums_follow_input_order(tmp_path, helpers):
    # Two pairs repeated four times with the same weights in opposite orders. Their float64
    # sums round differently (1 + 2^-24 is a float32 tie; the 2^-53 terms decide the side), so
    # the float32 weights differ: an out-of-core build that reordered repeats across chunks or
    # buckets would not give the in-memory bytes.
    order_a = [1.0, 2.0**-24, 2.0**-53, 2.0**-53]
    rows = []
    for i, (wa, wb) in enumerate(zip(order_a, order_a[::-1])):
        rows += [(1, 2, wa), (3, 0, wb)] + [(4 + (i + j) % 5, j % 4, 0.5) for j in range(15)]
    edges = {"pin_id": [r[0] for r in rows], "board_id": [r[1] for r in rows], "weight": [r[2] for r in rows]}
    data = helpers.write_dataset(tmp_path / "data", "parquet", tables={
        "pins": {"pin_id": list(range(10)), "text": [None] * 10, "image": [None] * 10},
        "boards": {"board_id": list(range(4)), "name": [None] * 4}, "edges": edges})
    mem, ext = both_builds(data, tmp_path, plan=BuildPlan(1, 1, 5, 3, 4))
    assert_same_store(mem, ext, helpers)
    g = PinBoardGraph.open(ext)
    w = {(p, int(g.pin_indices[e])): float(g.pin_weights[e])
         for p in (1, 3) for e in range(int(g.pin_indptr[p]), int(g.pin_indptr[p + 1]))}
    assert sorted(w) == [(1, 2), (3, 0)] and w[(1, 2)] != w[(3, 0)]  # the order shows


def test_tiny_groups_and_a_budget_below_the_baseline(tmp_path, helpers, monkeypatch):
    data = random_dataset(tmp_path / "data", helpers, num_edges=2000, seed=2)
    load_dataset_graph(data, progress=False).save(tmp_path / "mem")
    calls = []
    real = eb._sort_group
    monkeypatch.setattr(eb, "_sort_group", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    build_graph_external(data, tmp_path / "tiny", progress=False, plan=TINY)
    # every pin and board has more than 7 edges here: each is a group of its own
    g = PinBoardGraph.open(tmp_path / "mem")
    assert len(calls) == int((g.pin_degrees() > 0).sum() + (g.board_degrees() > 0).sum())
    assert_same_store(tmp_path / "mem", tmp_path / "tiny", helpers)
    plans = []
    monkeypatch.setattr(eb, "plan_build", lambda *a: plans.append(real_plan(*a)) or plans[-1])
    real_plan = plan_build
    with pytest.warns(UserWarning, match="memory budget 1,000 bytes leaves less than 64 MiB"):
        build_graph_external(data, tmp_path / "ext", progress=False, memory_budget="1KB")
    assert plans[0].working_bytes == eb.MIN_WORKING_BYTES
    assert_same_store(tmp_path / "mem", tmp_path / "ext", helpers)


# ---------------------------------------------------------------------------- building blocks
def test_parse_bytes():
    assert parse_bytes(123) == 123
    assert parse_bytes("2GB") == parse_bytes("2g") == parse_bytes("2 gb") == 2 * 10**9
    assert parse_bytes("1.5GiB") == 3 * 2**29
    assert parse_bytes("64KiB") == 65536 and parse_bytes("512") == 512 and parse_bytes("3MB") == 3 * 10**6
    for bad in ("lots", "2XB", "iB", "-1", "0", "", "2 G B"):
        with pytest.raises(ValueError, match="memory budget"):
            parse_bytes(bad)


def test_plan_scales_with_the_budget():
    small = plan_build(500 * 10**6, 10**8, 10**6, 10**5, 300 * 10**6)
    large = plan_build(2 * 10**9, 10**8, 10**6, 10**5, 300 * 10**6)
    assert small.working_bytes == 500 * 10**6 - 300 * 10**6 - eb.NODE_BYTES * 1_100_000
    assert small.sort_edges * eb.SORT_BYTES_PER_EDGE <= small.working_bytes
    assert large.sort_edges > 5 * small.sort_edges and large.num_buckets < small.num_buckets
    assert small.num_buckets <= eb.MAX_BUCKETS and small.chunk_rows <= eb.MAX_CHUNK_ROWS


@pytest.mark.parametrize("seed", range(5))
def test_balanced_bounds(seed):
    rng = np.random.default_rng(seed)
    degrees = rng.zipf(1.5, 300).clip(0, 500)
    degrees[rng.random(300) < 0.2] = 0
    lo, hi, target = 10, 290, 120
    bounds = balanced_bounds(degrees, lo, hi, target, max_buckets=1000)
    assert bounds[0] == lo and bounds[-1] == hi and np.all(np.diff(bounds) > 0)
    sizes = np.add.reduceat(degrees[lo:hi], bounds[:-1] - lo)
    assert np.all((sizes <= target) | (np.diff(bounds) == 1))
    assert len(balanced_bounds(degrees, lo, hi, target, max_buckets=3)) <= 2 * 3 + 1


def test_buckets_keep_arrival_order_and_npy_appender_matches_np_save(tmp_path):
    dtype = record_dtype(np.dtype(np.int32), weights=True, timestamps=False)
    buckets = EdgeBuckets(tmp_path, "x", np.array([0, 3, 5, 10]), dtype)
    rec = np.zeros(20, dtype)
    rec["row"] = np.arange(20) % 10
    rec["weight"] = np.arange(20)
    buckets.append(rec[:11])
    buckets.append(rec[11:])
    assert buckets.counts.tolist() == [6, 4, 10]
    got = buckets.read(2)
    np.testing.assert_array_equal(got["weight"], [w for w in range(20) if w % 10 >= 5])
    values = np.arange(1000, dtype=np.int64) * 3
    app = NpyAppender(tmp_path, "arr", np.int64, max_length=10**9)
    app.append(values[:400])
    app.append(values[400:])
    rec = app.close()
    buf = io.BytesIO()
    np.save(buf, values)
    assert (tmp_path / "arr.npy").read_bytes() == buf.getvalue()
    assert rec["shape"] == [1000] and rec["dtype"] == "<i8"


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
@pytest.mark.parametrize("problem", ["unknown_pin", "negative_weight", "null_board"])
def test_bad_input_gives_the_in_memory_error(tmp_path, helpers, fmt, problem):
    tables = helpers.default_tables()
    edges = {k: v * 20 for k, v in tables["edges"].items()}  # 160 rows: the bad one is in a late chunk
    row = 137
    if problem == "unknown_pin":
        edges["pin_id"][row] = 99
    elif problem == "negative_weight":
        edges["weight"][row] = -1.0
    else:
        edges["board_id"][row] = None
    data = helpers.write_dataset(tmp_path / "data", fmt, edges=edges)
    with pytest.raises(DatasetError) as mem_err:
        load_dataset_graph(data, progress=False)
    with pytest.raises(DatasetError) as ext_err:
        build_graph_external(data, tmp_path / "ext", progress=False, plan=TINY)
    assert str(ext_err.value) == str(mem_err.value)
    assert ext_err.value.row == row and ext_err.value.file.name == f"edges.{fmt}"
    assert not (tmp_path / "ext").exists()


def test_failure_midway_leaves_the_existing_store_intact(tmp_path, helpers, monkeypatch):
    data = random_dataset(tmp_path / "data", helpers, seed=4)
    out = tmp_path / "graph"
    build_graph_from_dataset(helpers.write_dataset(tmp_path / "old", "csv"), out, progress=False)
    before = helpers.tree_digest(out)
    calls = []

    def failing(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # midway through the pin direction: buckets and arrays half written
            raise OSError("disk full")
        return real(*a, **k)
    real = eb._sort_group
    monkeypatch.setattr(eb, "_sort_group", failing)
    with pytest.raises(OSError, match="disk full"):
        build_graph_external(data, out, progress=False, plan=TINY)
    assert helpers.tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "graph", "old"]  # no temp dir left
    # a bad row late in the file: the same
    bad = helpers.default_tables()["edges"]
    bad = {k: v * 10 for k, v in bad.items()}
    bad["pin_id"][70] = 12345
    helpers.write_dataset(tmp_path / "bad", "parquet", edges=bad)
    with pytest.raises(DatasetError, match="row 70"):
        build_graph_external(tmp_path / "bad", out, progress=False, plan=TINY)
    assert helpers.tree_digest(out) == before
    assert PinBoardGraph.open(out, verify="full").num_edges == 7


# ---------------------------------------------------------------------------- dispatch and CLI
def test_cli_memory_budget_flag(tmp_path, helpers, monkeypatch, capsys):
    from training.cli import main

    data = random_dataset(tmp_path / "data", helpers, fmt="csv", string_ids=True, seed=9)
    used = []
    real = eb.build_graph_external
    monkeypatch.setattr(eb, "build_graph_external", lambda *a, **k: used.append(k["memory_budget"]) or real(*a, **k))
    assert main(["build-graph", str(data), "--out", str(tmp_path / "ext"), "--memory-budget", "2GB", "--quiet"]) == 0
    assert used == [2 * 10**9]
    assert "built" in capsys.readouterr().out
    assert main(["build-graph", str(data), "--out", str(tmp_path / "mem"), "--quiet"]) == 0
    assert used == [2 * 10**9]  # small edges file, no flag: in memory
    assert_same_store(tmp_path / "mem", tmp_path / "ext", helpers)
    assert main(["build-graph", str(data), "--out", str(tmp_path / "x"), "--memory-budget", "lots"]) == 2
    assert "--memory-budget" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_large_edges_file_goes_out_of_core_by_default(tmp_path, helpers, monkeypatch):
    data = random_dataset(tmp_path / "data", helpers, seed=11)
    used = []
    real = eb.build_graph_external
    monkeypatch.setattr(eb, "build_graph_external", lambda *a, **k: used.append(k["memory_budget"]) or real(*a, **k))
    monkeypatch.setattr(eb, "AUTO_EXTERNAL_BYTES", 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the default budget is ample here: no warning
        g = build_graph_from_dataset(data, tmp_path / "ext", progress=False)
    assert used == [eb.DEFAULT_MEMORY_BUDGET]
    assert g.num_edges == load_dataset_graph(data, progress=False).num_edges
