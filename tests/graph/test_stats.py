"""graph_stats against networkx / numpy, and the build-graph / graph-stats commands."""
from __future__ import annotations

import json
import re

import networkx as nx
import numpy as np
import pytest

from graph import PinBoardGraph, make_splits
from graph.stats import format_stats, graph_stats
from training.cli import main


@pytest.fixture
def fragmented() -> PinBoardGraph:
    # components: {p0,p1,b0,b1}, {p2,b2}, {p3,p4,b3}, isolated p5, p6 and board b4
    pins = [0, 0, 1, 1, 2, 3, 4, 0]
    boards = [0, 1, 1, 1, 2, 3, 3, 0]
    return PinBoardGraph.from_edges(pins, boards, num_pins=7, num_boards=5,
                                    weights=[1, 2, 3, 4, 5, 6, 7, 0.5], timestamps=[5, 4, 3, 2, 1, 9, 8, 7])


def test_stats_against_networkx(fragmented, small_graph):
    for g in (fragmented, small_graph):
        s = graph_stats(g)
        G = g.to_networkx()
        assert (s["num_pins"], s["num_boards"], s["num_edges"]) == (g.num_pins, g.num_boards, G.number_of_edges())
        comps = list(nx.connected_components(G))
        assert s["connected_components"] == len(comps)
        largest = max(comps, key=len)
        assert s["largest_component_nodes"] == len(largest)
        assert s["largest_component_share"] == pytest.approx(len(largest) / G.number_of_nodes())
        assert s["largest_component_edge_share"] == pytest.approx(
            G.subgraph(largest).number_of_edges() / G.number_of_edges())
        pin_deg = np.array([G.degree(("pin", i)) for i in range(g.num_pins)])
        board_deg = np.array([G.degree(("board", j)) for j in range(g.num_boards)])
        for key, deg in (("pin_degree", pin_deg), ("board_size", board_deg)):
            d = s[key]
            assert (d["min"], d["max"]) == (deg.min(), deg.max())
            assert d["mean"] == pytest.approx(deg.mean())
            assert [d["p50"], d["p90"], d["p99"]] == pytest.approx(np.quantile(deg, [0.5, 0.9, 0.99]).tolist())
        assert s["isolated_pins"] == int((pin_deg == 0).sum())
        assert s["isolated_boards"] == int((board_deg == 0).sum())
        json.dumps(s)  # JSON-able


def test_stats_values_on_a_small_graph(fragmented):
    s = graph_stats(fragmented)
    assert s["num_edges"] == 6  # (0, 0) and (1, 1) twice: merged
    assert s["connected_components"] == 6 and s["largest_component_nodes"] == 4
    assert (s["isolated_pins"], s["isolated_boards"]) == (2, 1)
    assert s["index_dtype"] == "int32" and s["has_weights"] and s["has_timestamps"]
    assert s["weights"] == {"min": 1.5, "max": 7.0, "mean": pytest.approx(28.5 / 6)}
    assert s["timestamps"] == {"min": 1, "max": 9}
    assert "splits" not in s and "bytes_on_disk" not in s


def test_stats_with_splits_and_disk(tmp_path, fragmented):
    fragmented.splits = make_splits(fragmented, seed=0, cold_start_fraction=0.2)
    fragmented.save(tmp_path / "g")
    g = PinBoardGraph.open(tmp_path / "g")
    s = graph_stats(g)
    assert s["splits"]["counts"] == g.splits.counts()
    assert s["splits"]["params"]["seed"] == 0
    size = sum(p.stat().st_size for p in (tmp_path / "g").iterdir())
    assert s["bytes_on_disk"] == size and s["bytes_per_edge"] == pytest.approx(size / 6)
    text = format_stats(s)
    for needle in ("num pins", "connected components", "6", "pin degree", "board size",
                   "bytes per edge", "split edges", "cold-start pins"):
        assert needle in text
    # values start in one column
    assert len({re.match(r".*?\S\s{2,}(?=\S)", line).end() for line in text.splitlines()[:8]}) == 1


def test_stats_of_an_empty_graph():
    s = graph_stats(PinBoardGraph.from_edges([], []))
    assert s["num_edges"] == 0 and s["pin_degree"]["min"] is None and s["connected_components"] == 0
    assert "num pins" in format_stats(s)


# ---------------------------------------------------------------------------- CLI
def test_cli_build_graph_and_stats(tmp_path, helpers, capsys):
    d = helpers.write_dataset(tmp_path / "data", "csv")
    out = tmp_path / "graph"
    rc = main(["build-graph", str(d), "--out", str(out), "--seed", "3", "--val-fraction", "0.2",
               "--test-fraction", "0.1", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert f"built {out}" in captured.out and "edges 7 (1 duplicate edges merged)" in captured.out
    assert "1 cold-start pins (fresh_flag)" in captured.out
    g = PinBoardGraph.open(out, verify="full")
    assert g.splits.params["seed"] == 3 and g.splits.params["val_fraction"] == 0.2

    assert main(["graph-stats", str(out), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["num_pins"] == 4 and s["num_boards"] == 3 and s["num_edges"] == 7
    assert s["splits"]["counts"]["cold_start_pins"] == 1
    assert s["source"] == str(d.absolute())
    assert s["bytes_on_disk"] > 0

    assert main(["graph-stats", str(out), "--verify", "full"]) == 0
    assert "connected components" in capsys.readouterr().out

    assert main(["build-graph", str(d), "--out", str(out), "--cold-start-fraction", "0.5", "--quiet"]) == 0
    capsys.readouterr()
    assert PinBoardGraph.open(out).splits.params["cold_start_source"] == "random"


def test_cli_build_graph_progress_goes_to_stderr(tmp_path, helpers, capsys):
    d = helpers.write_dataset(tmp_path / "data", "parquet")
    assert main(["build-graph", str(d), "--out", str(tmp_path / "g")]) == 0
    captured = capsys.readouterr()
    assert "reading" not in captured.out and "built" in captured.out


def test_cli_errors_exit_2_with_file_and_row(tmp_path, helpers, capsys):
    d = helpers.write_dataset(tmp_path / "data", "csv", edges="pin_id,board_id\n10,fashion\n11,nowhere\n")
    out = tmp_path / "graph"
    rc = main(["build-graph", str(d), "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("pinclip build-graph: error: ")
    assert str(d / "edges.csv") in err and "row 1 (0-based data row" in err and "unknown board_id 'nowhere'" in err
    assert "Traceback" not in err and not out.exists()

    (out / "x").mkdir(parents=True)  # not a store: refused
    assert main(["graph-stats", str(out)]) == 2
    assert "not a finished graph store" in capsys.readouterr().err
    assert main(["build-graph", str(tmp_path / "nope"), "--out", str(tmp_path / "g2"), "--quiet"]) == 2
    assert "no such dataset directory" in capsys.readouterr().err
