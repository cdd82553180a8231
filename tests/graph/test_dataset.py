"""Building a store from a dataset directory: valid inputs and every kind of bad input."""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph import PinBoardGraph
from graph.dataset import DatasetError, build_graph_from_dataset, load_dataset_graph
from graph.splits import COLD

FORMATS = ["csv", "parquet"]


def load(path: Path, **kw) -> PinBoardGraph:
    return load_dataset_graph(path, progress=False, **kw)


# ---------------------------------------------------------------------------- valid datasets
@pytest.mark.parametrize("fmt", FORMATS)
def test_default_dataset(tmp_path, helpers, fmt):
    d = helpers.write_dataset(tmp_path / "data", fmt)
    pq.write_table(pa.table({"pin_id": [10], "topic": [3]}), d / "truth_pins.parquet")
    g = load(d)
    assert (g.num_pins, g.num_boards) == (4, 3)
    assert g.pin_ids.type == pa.int64() and g.pin_ids.to_pylist() == [10, 11, 12, 13]
    assert g.board_ids.type == pa.large_string() and g.board_ids.to_pylist() == ["fashion", "nature", "pets"]
    # (10, fashion) appears twice: merged, weights summed, earliest timestamp kept
    assert g.num_edges == 7
    assert g.manifest["source"]["duplicate_edges_merged"] == 1
    p10 = int(g.pin_index([10])[0])
    assert g.external_board_ids(g.boards_of(p10)) == ["fashion", "nature"]
    assert g.pin_weights[g.pin_indptr[p10]].item() == 2.5
    assert g.pin_timestamps[g.pin_indptr[p10]].item() == 50
    # features by internal id (= row order)
    f = g.features
    assert f.pin_text([0, 1, 2]) == ["red dress", "blue, sky", None]
    assert f.pin_image_paths([0, 1]) == [d.absolute() / "img/10.png", None]
    assert f.pin_fresh([0, 1, 2, 3]).tolist() == [False, False, True, False]
    assert f.board_names([0, 1, 2]) == ["Fashion", None, "Pets"]
    # the fresh column gives the cold-start pins
    assert g.splits.cold_start_pins.tolist() == [2]
    assert g.splits.params["cold_start_source"] == "fresh_flag"
    edge_pin = g.edges()[0].numpy()
    np.testing.assert_array_equal(g.splits.edge_split == COLD, edge_pin == 2)
    # the ground truth stays out of the graph but is findable through the source record
    src = g.manifest["source"]
    assert src["dataset_dir"] == str(d.absolute())
    assert src["tables"] == {"pins": f"pins.{fmt}", "boards": f"boards.{fmt}", "edges": f"edges.{fmt}"}
    assert src["truth_files"] == ["truth_pins.parquet"]
    assert src["rows"] == {"pins": 4, "boards": 3, "edges": 8}


@pytest.mark.parametrize("fmt", FORMATS)
def test_build_writes_a_store_that_round_trips(tmp_path, helpers, fmt):
    d = helpers.write_dataset(tmp_path / "data", fmt)
    g = build_graph_from_dataset(d, tmp_path / "graph", seed=1, progress=False)
    assert g.path == tmp_path / "graph"
    h = PinBoardGraph.open(tmp_path / "graph", verify="full")
    mem = load(d, seed=1)
    for name in ("pin_indptr", "pin_indices", "board_indices", "pin_weights", "board_timestamps"):
        assert np.array_equal(getattr(h, name).numpy(), getattr(mem, name).numpy()), name
    assert h.pin_ids.equals(mem.pin_ids) and h.board_ids.equals(mem.board_ids)
    assert h.features.pins.equals(mem.features.pins)
    np.testing.assert_array_equal(h.splits.edge_split, mem.splits.edge_split)
    assert h.manifest["source"] == mem.manifest["source"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "graph"]


def test_csv_id_type_inference(tmp_path, helpers):
    # every pin id an integer -> int64 (so "007" is pin 7); one non-integer board id -> strings
    d = helpers.write_dataset(
        tmp_path / "d", "csv",
        pins="pin_id,text,image\n007,a,\n8,b,\n",
        boards="board_id,name\n1,x\nb2,y\n",
        edges="pin_id,board_id\n7,1\n008,b2\n")
    g = load(d)
    assert g.pin_ids.type == pa.int64() and g.pin_ids.to_pylist() == [7, 8]
    assert g.board_ids.type == pa.large_string() and g.board_ids.to_pylist() == ["1", "b2"]
    assert g.edges()[1].tolist() == [0, 1]
    # "NA" and "null" are ordinary string ids (only an empty field is null)
    d2 = helpers.write_dataset(tmp_path / "d2", "csv", pins="pin_id,text,image\nNA,,\nnull,,\n",
                               boards="board_id,name\nB,\n", edges="pin_id,board_id\nNA,B\nnull,B\n")
    g2 = load(d2)
    assert g2.pin_ids.to_pylist() == ["NA", "null"] and g2.num_edges == 2
    assert g2.features.pin_text([0]) == [None] and g2.pin_weights is None and g2.pin_timestamps is None


def test_csv_quoting_bom_blank_lines_and_extra_columns(tmp_path, helpers):
    d = helpers.write_dataset(
        tmp_path / "d", "csv",
        pins='\ufeffpin_id,extra,text,image\n1,x,"a, b\nsecond line",i.png\n\n2,y,"say ""hi""",\n',
        boards="board_id,name,owner\n5,Five,me\n",
        edges="pin_id,board_id,weight,timestamp,note\n1,5,0.5,3,x\n2,5,1e1,4,y\n")
    g = load(d)
    assert g.features.pin_text([0, 1]) == ["a, b\nsecond line", 'say "hi"']
    assert g.features.pins.column_names == ["text", "image", "fresh"]
    assert g.pin_weights.tolist() == [0.5, 10.0]
    # no fresh column: a random 10% of pins (rounded) become cold-start
    assert g.splits.params["cold_start_source"] == "random"


def test_mixed_formats_and_parquet_types(tmp_path, helpers):
    d = tmp_path / "d"
    helpers.write_table(d, "pins", "parquet", {
        "pin_id": pa.array(["a", "b", "c"]).dictionary_encode(),
        "text": pa.array(["x", None, "z"], pa.large_string()),
        "image": pa.nulls(3, pa.string()), "fresh": [False, None, True]})
    helpers.write_table(d, "boards", "csv", "board_id,name\n1,one\n2,two\n")
    helpers.write_table(d, "edges", "parquet", {
        "pin_id": ["a", "b", "c", "a"], "board_id": pa.array([1, 2, 2, 2], pa.uint16()),
        "weight": pa.array([1, 2, 3, 4], pa.int32()),
        "timestamp": pa.array([1_500, 2_000, 3_000, 4_000], pa.timestamp("ms"))})
    g = load(d)
    assert g.pin_ids.to_pylist() == ["a", "b", "c"] and g.board_ids.type == pa.int64()
    assert g.pin_weights.tolist() == [1.0, 4.0, 2.0, 3.0]
    assert g.pin_timestamps.tolist() == [1, 4, 2, 3]  # milliseconds -> seconds
    assert g.features.pin_fresh([0, 1, 2]).tolist() == [False, False, True]  # null fresh = not fresh
    assert g.splits.cold_start_pins.tolist() == [2]


def test_cold_start_fraction_overrides_fresh(tmp_path, helpers):
    n = 200
    d = helpers.write_dataset(
        tmp_path / "d", "parquet",
        pins={"pin_id": list(range(n)), "text": ["t"] * n, "image": [None] * n, "fresh": [i < 5 for i in range(n)]},
        boards={"board_id": [0, 1], "name": ["a", "b"]},
        edges={"pin_id": list(range(n)) * 2, "board_id": [0] * n + [1] * n})
    assert load(d).splits.cold_start_pins.tolist() == [0, 1, 2, 3, 4]
    s = load(d, cold_start_fraction=0.25, seed=4).splits
    assert len(s.cold_start_pins) == 50 and s.params["cold_start_source"] == "random"
    assert load(d, cold_start_fraction=0.0).splits.counts()["cold_start"] == 0


def test_missing_feature_columns_warn_and_are_null(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "csv", pins="pin_id\n1\n2\n", boards="board_id\n3\n",
                              edges="pin_id,board_id\n1,3\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        g = load(d)
    messages = sorted(str(w.message).split("/")[-1] for w in caught)
    assert messages == ["boards.csv: no 'name' column; every name is null",
                        "pins.csv: no 'image' column; every image is null",
                        "pins.csv: no 'text' column; every text is null"]
    assert g.features.pin_text([0, 1]) == [None, None] and g.features.board_names([0]) == [None]
    assert g.num_pins == 2 and g.pin_degrees().tolist() == [1, 0]


# ---------------------------------------------------------------------------- bad input
def expect_error(d: Path, file: str, problem: str, row: int | None = None, column: str | None = None,
                 **kw) -> DatasetError:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(DatasetError) as info:
            load(d, **kw)
    err, msg = info.value, str(info.value)
    assert isinstance(err, ValueError)
    assert msg.startswith(str(d / file)), msg
    assert err.file == d / file
    if row is not None:
        assert f"row {row} (0-based data row" in msg, msg
        assert err.row == row
    if column is not None:
        assert f"column {column!r}" in msg, msg
    assert problem in msg, msg
    return err


@pytest.fixture
def tables(helpers):
    return helpers.default_tables()


def _with(tables, table, **cols):
    t = {k: dict(v) for k, v in tables.items()}
    t[table].update(cols)
    return t


@pytest.mark.parametrize("fmt", FORMATS)
def test_unknown_ids_in_edges(tmp_path, helpers, tables, fmt):
    d = helpers.write_dataset(tmp_path / "a", fmt, _with(tables, "edges", pin_id=[10, 10, 11, 99, 13, 13, 10, 11]))
    expect_error(d, f"edges.{fmt}", f"unknown pin_id 99 (not in pins.{fmt})", 3, "pin_id")
    bad_boards = list(tables["edges"]["board_id"])
    bad_boards[5] = "sports"
    d = helpers.write_dataset(tmp_path / "b", fmt, _with(tables, "edges", board_id=bad_boards))
    expect_error(d, f"edges.{fmt}", f"unknown board_id 'sports' (not in boards.{fmt})", 5, "board_id")


def test_unknown_non_integer_edge_id_for_integer_pins(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "csv", edges="pin_id,board_id\n10,fashion\nabc,fashion\n")
    expect_error(d, "edges.csv", "unknown pin_id 'abc' (pins.csv has integer ids)", 1, "pin_id")


@pytest.mark.parametrize("fmt", FORMATS)
def test_null_ids(tmp_path, helpers, tables, fmt):
    d = helpers.write_dataset(tmp_path / "a", fmt, _with(tables, "pins", pin_id=[10, None, 12, 13]))
    expect_error(d, f"pins.{fmt}", "missing pin_id (null or empty)", 1, "pin_id")
    d = helpers.write_dataset(tmp_path / "b", fmt, _with(tables, "boards", board_id=["fashion", "nature", None]))
    expect_error(d, f"boards.{fmt}", "missing board_id", 2, "board_id")
    ids = list(tables["edges"]["board_id"])
    ids[4] = None
    d = helpers.write_dataset(tmp_path / "c", fmt, _with(tables, "edges", board_id=ids))
    expect_error(d, f"edges.{fmt}", "missing board_id", 4, "board_id")


@pytest.mark.parametrize("fmt", FORMATS)
def test_negative_integer_ids(tmp_path, helpers, tables, fmt):
    d = helpers.write_dataset(tmp_path / "a", fmt, _with(tables, "pins", pin_id=[10, 11, -12, 13]))
    expect_error(d, f"pins.{fmt}", "negative pin_id -12; integer ids must be >= 0", 2, "pin_id")
    d = helpers.write_dataset(tmp_path / "b", fmt, _with(tables, "edges", pin_id=[10, -1, 11, 12, 13, 13, 10, 11]))
    expect_error(d, f"edges.{fmt}", "negative pin_id -1", 1, "pin_id")


@pytest.mark.parametrize("fmt", FORMATS)
def test_duplicate_ids(tmp_path, helpers, tables, fmt):
    d = helpers.write_dataset(tmp_path / "a", fmt, _with(tables, "pins", pin_id=[10, 11, 12, 11]))
    expect_error(d, f"pins.{fmt}", "duplicate pin_id 11 (first at row 1)", 3, "pin_id")
    d = helpers.write_dataset(tmp_path / "b", fmt, _with(tables, "boards", board_id=["x", "x", "y"]))
    expect_error(d, f"boards.{fmt}", "duplicate board_id 'x' (first at row 0)", 1, "board_id")


@pytest.mark.parametrize("table, column, values, problem", [
    ("pins", "text", [1, 2, 3, 4], "wrong column type int64 (the whole column); expected a string"),
    ("pins", "image", [1.0, 2.0, 3.0, 4.0], "wrong column type double"),
    ("pins", "fresh", [0, 1, 0, 0], "wrong column type int64 (the whole column); expected a boolean"),
    ("pins", "pin_id", [1.5, 2.5, 3.5, 4.5], "expected an integer or string id"),
    ("boards", "name", [True, False, True], "wrong column type bool"),
    ("edges", "weight", ["a"] * 8, "wrong column type string (the whole column); expected a number"),
    ("edges", "timestamp", [1.0] * 8, "wrong column type double (the whole column); expected an integer"),
])
def test_wrong_parquet_column_types(tmp_path, helpers, tables, table, column, values, problem):
    d = helpers.write_dataset(tmp_path / "d", "parquet", _with(tables, table, **{column: values}))
    expect_error(d, f"{table}.parquet", problem, column=column)


@pytest.mark.parametrize("table, column, values, row, problem", [
    ("edges", "weight", [1, 2, "heavy", 1, 1, 1, 1, 1], 2, "'heavy' is not a number"),
    ("edges", "timestamp", [1, 2, 3, 4, "1.5", 6, 7, 8], 4, "'1.5' is not an integer (seconds)"),
    ("edges", "timestamp", [1, 2, 3, 4, 5, 6, 7, "2024-01-01"], 7, "'2024-01-01' is not an integer"),
    ("pins", "fresh", [True, "yes", False, False], 1, "'yes' is not a boolean (true/false/1/0)"),
    ("edges", "weight", [1, 2, 3, None, 1, 1, 1, 1], 3, "missing weight"),
    ("edges", "timestamp", [None, 2, 3, 4, 5, 6, 7, 8], 0, "missing timestamp"),
])
def test_wrong_csv_values(tmp_path, helpers, tables, table, column, values, row, problem):
    d = helpers.write_dataset(tmp_path / "d", "csv", _with(tables, table, **{column: values}))
    expect_error(d, f"{table}.csv", problem, row, column)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("bad, problem", [
    (-1.0, "weight -1.0 is negative"),
    (math.inf, "weight inf is not finite"),
    (math.nan, "weight nan is not finite"),
    (1e39, "is too large for float32"),
])
def test_bad_weights(tmp_path, helpers, tables, fmt, bad, problem):
    w = list(tables["edges"]["weight"])
    w[6] = bad
    d = helpers.write_dataset(tmp_path / "d", fmt, _with(tables, "edges", weight=w))
    expect_error(d, f"edges.{fmt}", problem, 6, "weight")


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table, column", [("pins", "pin_id"), ("boards", "board_id"),
                                           ("edges", "pin_id"), ("edges", "board_id")])
def test_missing_required_column(tmp_path, helpers, tables, fmt, table, column):
    t = {k: dict(v) for k, v in tables.items()}
    t[table]["renamed"] = t[table].pop(column)
    d = helpers.write_dataset(tmp_path / "d", fmt, t)
    err = expect_error(d, f"{table}.{fmt}", f"missing required column {column!r}")
    assert "'renamed'" in str(err)  # lists the columns found


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("table, noun", [("pins", "pin"), ("boards", "board"), ("edges", "edge")])
def test_empty_files(tmp_path, helpers, tables, fmt, table, noun):
    d = helpers.write_dataset(tmp_path / "zero", fmt, tables)
    (d / f"{table}.{fmt}").write_bytes(b"")
    expect_error(d, f"{table}.{fmt}", f"file is empty (0 bytes); a dataset needs at least one {noun}")
    # header only / zero rows (the other tables stay valid)
    empty = {k: v[:0] for k, v in tables[table].items()}
    d = helpers.write_dataset(tmp_path / "header", fmt, _with(tables, table, **empty))
    if fmt == "csv":
        assert (d / f"{table}.csv").read_text().count("\n") == 1
    expect_error(d, f"{table}.{fmt}", f"no data rows; a dataset needs at least one {noun}")


def test_non_utf8_csv(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "a", "csv", pins=b"pin_id,text,image\n1,ok,\n2,caf\xe9 au lait,\n")
    err = expect_error(d, "pins.csv", "invalid UTF-8 at byte 3 of the value", 1, "text")
    assert "CSV files must be UTF-8" in str(err)
    d = helpers.write_dataset(tmp_path / "b", "csv", boards=b"board_id,name\nfa\xffshion,x\nnature,y\npets,z\n")
    expect_error(d, "boards.csv", "invalid UTF-8 at byte 2", 0, "board_id")
    d = helpers.write_dataset(tmp_path / "c", "csv", edges=b"pin_id,board_id,w\xe9ight\n10,fashion,1\n")
    expect_error(d, "edges.csv", "the header line is not valid UTF-8 (byte 17)")


def test_ragged_csv_row(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "csv",
                              edges="pin_id,board_id,weight\n10,fashion,1\n\n11,nature,2\n12,pets\n13,pets,1\n")
    expect_error(d, "edges.csv", "expected 3 fields, got 2", 2)


def test_corrupt_parquet(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "parquet")
    (d / "boards.parquet").write_bytes(b"PAR1 this is not parquet")
    expect_error(d, "boards.parquet", "not a readable Parquet file")


def test_damaged_parquet_pages(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "parquet")
    n = 5000
    pq.write_table(pa.table({"pin_id": np.full(n, 10), "board_id": ["fashion"] * n,
                             "weight": np.linspace(0, 1, n)}), d / "edges.parquet")
    data = bytearray((d / "edges.parquet").read_bytes())
    for off in range(200, len(data) // 2, 97):  # footer intact, column data garbled
        data[off] ^= 0x5A
    (d / "edges.parquet").write_bytes(bytes(data))
    expect_error(d, "edges.parquet", "unreadable Parquet data")


def test_table_files_both_or_neither(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "d", "csv")
    helpers.write_table(d, "boards", "parquet", helpers.default_tables()["boards"])
    with pytest.raises(DatasetError, match=r"both boards\.parquet and boards\.csv exist") as info:
        load(d)
    assert str(d) in str(info.value)
    (d / "boards.parquet").unlink()
    (d / "edges.csv").unlink()
    with pytest.raises(DatasetError, match=r"no edges table: expected edges\.parquet or edges\.csv"):
        load(d)
    with pytest.raises(DatasetError, match="no such dataset directory"):
        load(tmp_path / "missing")


def test_fractions_checked_before_reading(tmp_path):
    with pytest.raises(ValueError, match="val_fraction=1.5"):
        load(tmp_path / "does-not-matter", val_fraction=1.5)
    with pytest.raises(ValueError, match="cold_start_fraction=1.0"):
        build_graph_from_dataset(tmp_path, tmp_path / "g", cold_start_fraction=1.0)


# ---------------------------------------------------------------------------- nothing written on failure
@pytest.mark.parametrize("breakage", ["unknown_pin", "bad_weight", "duplicate_board", "empty_edges"])
def test_failed_build_leaves_existing_store_identical(tmp_path, helpers, tables, breakage):
    good = helpers.write_dataset(tmp_path / "good", "csv")
    out = tmp_path / "graph"
    build_graph_from_dataset(good, out, progress=False)
    before = helpers.tree_digest(out)
    bad = {
        "unknown_pin": _with(tables, "edges", pin_id=[10, 10, 11, 12, 13, 13, 10, 77]),
        "bad_weight": _with(tables, "edges", weight=[1, 1, 1, 1, 1, 1, 1, -2]),
        "duplicate_board": _with(tables, "boards", board_id=["a", "b", "a"]),
        "empty_edges": _with(tables, "edges", **{k: [] for k in tables["edges"]}),
    }[breakage]
    d = helpers.write_dataset(tmp_path / "bad", "parquet", bad)
    with pytest.raises(DatasetError):
        build_graph_from_dataset(d, out, progress=False)
    assert helpers.tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "graph"]
    assert PinBoardGraph.open(out, verify="full").num_edges == 7


def test_build_refuses_to_overwrite_the_dataset_or_other_directories(tmp_path, helpers):
    d = helpers.write_dataset(tmp_path / "data", "csv")
    with pytest.raises(ValueError, match="cannot replace its own dataset directory"):
        build_graph_from_dataset(d, d, progress=False)
    with pytest.raises(ValueError, match="not a graph store"):
        build_graph_from_dataset(d, tmp_path, progress=False)
    assert sorted(p.name for p in d.iterdir()) == ["boards.csv", "edges.csv", "pins.csv"]


def test_large_csv_spans_many_batches(tmp_path, helpers, monkeypatch):
    # small blocks force many batches: row numbers must keep counting across them
    import graph.tables as tables
    monkeypatch.setattr(tables, "CSV_BLOCK_BYTES", 1 << 12)
    monkeypatch.setattr(tables, "PARQUET_BATCH_ROWS", 500)
    n = 3000
    rows = [f"{i % 1000},{i % 37},{1 + i % 3}" for i in range(n)]
    rows[2500] = "5,999,1"
    edges = "pin_id,board_id,weight\n" + "\n".join(rows) + "\n"
    pins = "pin_id,text,image\n" + "\n".join(f"{i},t{i}," for i in range(1000)) + "\n"
    boards = "board_id,name\n" + "\n".join(f"{j},b" for j in range(37)) + "\n"
    d = helpers.write_dataset(tmp_path / "d", "csv", pins=pins, boards=boards, edges=edges)
    expect_error(d, "edges.csv", "unknown board_id 999", 2500, "board_id")
    rows[2500] = "5,3,1"
    (d / "edges.csv").write_text("pin_id,board_id,weight\n" + "\n".join(rows) + "\n")
    g = load(d)
    assert g.num_pins == 1000 and g.manifest["source"]["rows"]["edges"] == n
    ref = {tuple(r.split(",")[:2]) for r in rows}
    assert g.num_edges == len(ref)
    # parquet batches too
    pq.write_table(pa.table({"pin_id": [int(r.split(",")[0]) for r in rows],
                             "board_id": [int(r.split(",")[1]) for r in rows[:-1]] + [-4]}), d / "edges.parquet")
    (d / "edges.csv").unlink()
    expect_error(d, "edges.parquet", "negative board_id -4", n - 1, "board_id")


# ---------------------------------------------------------------------------- image paths
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("image, problem", [
    ("/etc/passwd", "is absolute; image paths must be relative"),
    ("../../etc/passwd", "outside the dataset directory"),
    ("img/../../secret.png", "outside the dataset directory"),
])
def test_image_paths_outside_the_dataset_are_rejected(tmp_path, helpers, tables, fmt, image, problem):
    images = list(tables["pins"]["image"])
    images[2] = image
    d = helpers.write_dataset(tmp_path / "d", fmt, _with(tables, "pins", image=images))
    err = expect_error(d, f"pins.{fmt}", problem, 2, "image")
    assert image in str(err)
    # the build of a store (in memory or out of core) refuses it before writing anything
    for budget in (None, "64MB"):
        with pytest.raises(DatasetError, match="row 2"):
            build_graph_from_dataset(d, tmp_path / "g", progress=False, memory_budget=budget)
        assert not (tmp_path / "g").exists()


def test_symlinks_escaping_the_dataset_are_rejected(tmp_path, helpers, tables):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"private")
    d = helpers.write_dataset(tmp_path / "d", "csv", tables)
    (d / "img").mkdir()
    (d / "img" / "10.png").write_bytes(b"fine")
    (d / "img" / "12.png").symlink_to(outside / "secret.png")           # a symlinked file
    err = expect_error(d, "pins.csv", f"resolves to {outside.resolve() / 'secret.png'}, outside", 2, "image")
    assert err.column == "image"
    (d / "img" / "12.png").unlink()
    (d / "img" / "12.png").symlink_to(d / "img" / "10.png")              # a symlink that stays inside
    assert load(d).num_pins == 4
    (d / "img" / "12.png").unlink()
    (d / "img" / "10.png").unlink()
    (d / "img").rmdir()
    (d / "img").symlink_to(outside)                                      # a symlinked directory
    expect_error(d, "pins.csv", "outside the dataset directory", 0, "image")


def test_unusual_but_safe_image_paths_are_accepted(tmp_path, helpers, tables):
    d = helpers.write_dataset(tmp_path / "d", "parquet",
                              _with(tables, "pins", image=["./img/10.png", "img//11.png", None, "img/x/../13.png"]))
    g = load(d)
    assert g.features.pin_image_paths([0, 2]) == [d.absolute() / "img/10.png", None]


# ---------------------------------------------------------------------------- ids too large for int64
def test_uint64_ids_of_2_63_or_more_are_too_large_not_negative(tmp_path, helpers, tables):
    big = 2**63
    pins = pa.array([10, 11, big, 13], pa.uint64())
    d = helpers.write_dataset(tmp_path / "p", "parquet", _with(tables, "pins", pin_id=pins))
    err = expect_error(d, "pins.parquet", f"pin_id {big} is too large (>= 2^63)", 2, "pin_id")
    assert "negative" not in str(err)
    edges = pa.array([10, 10, 11, 12, 13, 13, 2**64 - 1, 11], pa.uint64())
    d = helpers.write_dataset(tmp_path / "e", "parquet", _with(tables, "edges", pin_id=edges))
    expect_error(d, "edges.parquet", f"pin_id {2**64 - 1} is too large (>= 2^63)", 6, "pin_id")
    # CSV: an integer-looking edge id beyond int64 cannot be one of the pins' int64 ids
    d = helpers.write_dataset(tmp_path / "c", "csv", _with(tables, "edges", pin_id=[10, 10, 11, 12, 13, 13, big, 11]))
    expect_error(d, "edges.csv", f"pin_id {big} is too large", 6, "pin_id")


def test_csv_integer_ids_beyond_int64_become_strings_with_a_warning(tmp_path, helpers, tables):
    big = 2**63
    t = _with(tables, "pins", pin_id=[10, 11, big, 13])
    t["edges"]["pin_id"] = [10, 10, 11, big, 13, 13, 10, 11]
    d = helpers.write_dataset(tmp_path / "d", "csv", t)
    with pytest.warns(UserWarning, match=rf"row 2 \(0-based data row\), column 'pin_id': pin_id {big} is too large for int64"):
        g = load(d)
    assert g.pin_ids.type == pa.large_string() and g.pin_ids.to_pylist()[2] == str(big)
