"""`pinclip baseline frozen-text|graph-only`: a baseline directory that `pinclip evaluate` scores."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_graph(tiny_world, tmp_path_factory):
    from graph.dataset import build_graph_from_dataset
    out = tmp_path_factory.mktemp("baseline") / "graph"
    build_graph_from_dataset(tiny_world, out, progress=False)
    return out


def test_graph_only_baseline_is_evaluable_and_rewritable(tiny_graph, tmp_path, capsys):
    from training.cli import main
    out = tmp_path / "graph_only"
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--steps", "2",
                 "--seed", "3", "--quiet"]) == 0
    assert "pinclip evaluate" in capsys.readouterr().out
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "graph_only" and meta["info"]["steps"] == 2 and meta["info"]["seed"] == 3
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["kind"] == "baseline" and ev["metrics"]["board_recall@10"] is not None
    assert ev["metrics"]["cold_start_board_recall@10"] is None   # no train edge: unsupported
    # Its own earlier output is replaced; an option it does not take is refused.
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--steps", "1",
                 "--quiet"]) == 0
    assert json.loads((out / "method.json").read_text())["info"]["steps"] == 1
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--model", "x"]) == 2
    assert "takes no --model" in capsys.readouterr().err


def test_frozen_text_baseline_and_refusals(tiny_graph, tmp_path, capsys, monkeypatch):
    from training.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "frozen_text"
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(out), "--quiet"]) == 0
    assert "pinclip evaluate" in capsys.readouterr().out
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "frozen_text" and meta["embeddings"] == ["text"]
    assert meta["info"]["model"] == "all-MiniLM-L6-v2"
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["board_recall@10"] is not None and "t2i_recall@10" not in ev["metrics"]

    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(out), "--steps", "3"]) == 2
    assert "takes no --steps" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(mine)]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1
    assert main(["baseline", "graph-only", "--graph", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no such directory" in capsys.readouterr().err
