"""Method directories (baselines and training runs), evaluation.json, the report and the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.evaluation.report import BAR, CHANCE_ROW, MixedGraphsError, bar_checks, write_report
from training.evaluation.run_eval import (CURVE_KS, EvaluationError, board_mate_pairs, chance_metrics,
                                          evaluate_dir, load_evaluation, save_baseline, truth_labels)
from training.evaluation.summary import HEADLINE_KEYS

from .conftest import synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(graph store path, graph, truth) of a 400-pin world without images."""
    return synthetic_store(tmp_path_factory, "eval", 400, 30)


def _topic_embeddings(truth, noise: float, seed: int, dim: int = 16) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    topic = torch.as_tensor(truth.pin_topic).long()
    centers = torch.randn(int(topic.max()) + 1, dim, generator=gen)
    return centers[topic] + noise * torch.randn(topic.numel(), dim, generator=gen)


def test_truth_labels_follow_internal_ids(store):
    _, g, truth = store
    lab = truth_labels(g)
    ext = np.asarray(g.external_pin_ids(np.arange(g.num_pins)))
    assert np.array_equal(lab["topic"], np.asarray(truth.pin_topic)[ext])
    assert (lab["style"] >= 0).all()


def test_board_mate_pairs_share_a_train_board(store):
    from graph.splits import TRAIN
    _, g, _ = store
    pairs = board_mate_pairs(g, max_pairs=500, seed=3)
    assert pairs.shape[1] == 2 and pairs.shape[0] > 400
    assert bool((pairs[:, 0] != pairs[:, 1]).all())
    pins, boards = g.edges()
    train = torch.from_numpy(np.asarray(g.splits.edge_split) == TRAIN)
    member = set(zip(pins[train].tolist(), boards[train].tolist()))
    boards_of = {}
    for p, b in member:
        boards_of.setdefault(p, set()).add(b)
    assert all(boards_of[a] & boards_of[b] for a, b in pairs.tolist())
    assert torch.equal(pairs, board_mate_pairs(g, max_pairs=500, seed=3))


def test_baseline_dirs_evaluate_and_report(store, tmp_path):
    path, g, truth = store
    good = _topic_embeddings(truth, 0.3, seed=0)
    ext = np.asarray(g.external_pin_ids(np.arange(g.num_pins)))
    good = good[torch.from_numpy(ext)]  # rows follow internal ids
    rand = torch.randn(g.num_pins, 16, generator=torch.Generator().manual_seed(1))
    warm = ~g.splits.is_cold_start(g.num_pins)
    save_baseline(tmp_path / "a", "pinclip", path, {"image": good + 0.1 * rand, "text": good, "fused": good})
    save_baseline(tmp_path / "b", "clip_only", path, {"image": rand, "text": rand, "fused": rand})
    save_baseline(tmp_path / "c", "graph_only", path, {"graph": good}, supported=warm)

    ev = evaluate_dir(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "evaluation.json").read_text()) == ev
    m = ev["metrics"]
    for k in CURVE_KS:
        assert 0 <= m[f"board_recall@{k}"] <= 1 and 0 <= m[f"t2i_recall@{k}"] <= 1
    assert m["board_recall@1"] <= m["board_recall@10"] <= m["board_recall@50"]
    assert set(ev["modalities"]) == {"image", "text", "fused"}
    assert ev["neighborhood"]["topic_purity@10"] > 0.8      # clustered by topic by construction
    assert ev["neighborhood"]["board_coherence"] > 0

    graph_only = evaluate_dir(tmp_path / "c")
    assert graph_only["metrics"]["cold_start_board_recall@10"] is None
    assert "t2i_recall@10" not in graph_only["metrics"]
    assert graph_only["counts"]["supported_pins"] == int(warm.sum())

    rep = write_report([tmp_path / "a", tmp_path / "b", tmp_path / "c"], tmp_path / "report")
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert list(metrics) == ["pinclip", "clip_only", "graph_only"]
    assert set(metrics["pinclip"]) == set(HEADLINE_KEYS)
    assert metrics["graph_only"]["cold_start_board_recall@10"] is None
    assert metrics["pinclip"]["board_recall@10"] > metrics["clip_only"]["board_recall@10"]
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| pinclip |" in md and "The bar" in md and "n/a" in md
    for name in ("recall_board.png", "cold_vs_warm.png", "projection_graph_only.png", "similarity_pinclip.png"):
        assert (tmp_path / "report" / name).stat().st_size > 1000, name
        assert f"({name})" in md
    assert [c["baseline"] for c in rep["checks"]] == ["clip_only", "clip_only", "clip_only"]
    # The chance level: a reference row of report.md, in evaluation.json, never a method of metrics.json.
    assert "chance" in ev and 0 <= ev["chance"]["board_recall@10"] < m["board_recall@10"]
    assert set(ev["chance"]) >= {f"board_recall@{k}" for k in CURVE_KS} | {"board_mrr", "neighbor_overlap@10"}
    assert ev["chance"] == graph_only["chance"]              # the store's, the same for every method
    assert f"| {CHANCE_ROW} |" in md and "random" in md
    assert CHANCE_ROW not in metrics and list(rep["chance"]) == [CHANCE_ROW]
    assert f"- pinclip: `{path.absolute()}` (manifest sha256" in md      # every method's store is named
    assert "training_loss.png" not in md                      # baselines only: no training loss


def test_chance_level_is_seeded_and_near_random(store):
    path, g, _ = store
    a, b = chance_metrics(g), chance_metrics(g, seed=1)
    assert chance_metrics(g) == a                             # seeded
    assert a != b
    # 10 of roughly 400 candidates: a random ranking finds a board mate in the top 10 rarely.
    assert a["board_recall@10"] < 0.6 and a["board_recall@1"] <= a["board_recall@10"]
    assert "t2i_recall@1" not in a                            # a world without images: nothing to pair


def test_report_refuses_methods_on_different_graph_stores(store, tmp_path):
    from graph.dataset import build_graph_from_dataset

    from training.cli import main
    path, g, _ = store
    other = build_graph_from_dataset(g.manifest["source"]["dataset_dir"], tmp_path / "other_graph", seed=5,
                                     progress=False)
    emb = torch.randn(g.num_pins, 8, generator=torch.Generator().manual_seed(0))
    save_baseline(tmp_path / "a", "a", path, {"fused": emb})
    save_baseline(tmp_path / "b", "b", tmp_path / "other_graph", {"fused": emb[:other.num_pins]})
    with pytest.raises(MixedGraphsError, match="2 different graph stores") as exc:
        write_report([tmp_path / "a", tmp_path / "b"], tmp_path / "r1")
    assert str(path.absolute()) in str(exc.value) and str((tmp_path / "other_graph").absolute()) in str(exc.value)
    assert "--allow-mixed-graphs" in str(exc.value)
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r2"), "--quiet"]) == 2
    assert not (tmp_path / "r2").exists()
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "r3"), "--quiet",
                 "--allow-mixed-graphs"]) == 0
    md = (tmp_path / "r3" / "report.md").read_text()
    assert "Mixed graph stores" in md
    assert f"- a: `{path.absolute()}`" in md and f"- b: `{(tmp_path / 'other_graph').absolute()}`" in md
    assert f"| {CHANCE_ROW}, store 1 |" in md and f"| {CHANCE_ROW}, store 2 |" in md
    graphs = json.loads((tmp_path / "r3" / "report.json").read_text())["graphs"]
    assert graphs["a"]["manifest_sha256"] != graphs["b"]["manifest_sha256"]
    # The same store reached by two methods is one store.
    save_baseline(tmp_path / "c", "c", path, {"fused": -emb})
    assert main(["report", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "r4"), "--quiet"]) == 0


def test_bar_checks_arithmetic():
    m = {"pinclip": {"board_recall@10": 0.6, "cold_start_board_recall@10": 0.5, "t2i_recall@10": 0.19},
         "clip_only": {"board_recall@10": 0.5, "cold_start_board_recall@10": 0.5, "t2i_recall@10": 0.2},
         "frozen_text": {"board_recall@10": 0.4, "cold_start_board_recall@10": None}}
    checks = {(c["metric"], c["baseline"]): c for c in bar_checks(m)}
    assert len(checks) == len(BAR)
    c = checks[("board_recall@10", "clip_only")]
    assert c["relative"] == pytest.approx(0.2) and c["passed"]
    assert not checks[("cold_start_board_recall@10", "clip_only")]["passed"]       # +0% < +15%
    assert checks[("board_recall@10", "frozen_text")]["passed"]                   # +50%
    assert checks[("t2i_recall@10", "clip_only")]["passed"]                       # -5% is allowed
    m["pinclip"]["t2i_recall@10"] = 0.18
    assert not {(c["metric"], c["baseline"]): c for c in bar_checks(m)}[("t2i_recall@10", "clip_only")]["passed"]
    del m["frozen_text"]
    assert all(c["baseline"] == "clip_only" for c in bar_checks(m))


def test_bad_directories_are_named(store, tmp_path):
    from training.cli import main
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluationError, match="empty"):
        evaluate_dir(tmp_path / "empty")
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "r")]) == 2
    path, g, _ = store
    save_baseline(tmp_path / "short", "x", path, {"fused": torch.zeros(3, 4)})
    with pytest.raises(EvaluationError, match="3 rows"):
        evaluate_dir(tmp_path / "short")
    with pytest.raises(ValueError, match="expected some of"):
        save_baseline(tmp_path / "bad", "x", path, {"pixels": torch.zeros(3, 4)})
    assert not (tmp_path / "bad").exists()


def test_training_run_evaluates_and_reuses(make_config, tmp_path, capsys):
    """A trained run: pinclip evaluate embeds it once; a second evaluation reuses evaluation.json."""
    from training.cli import main
    from training.config import load_train_config
    from training.trainer import Trainer
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 3, "checkpoint_every": 3})), run).train()
    assert main(["evaluate", str(run), "--json", "--quiet"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["kind"] == "run" and ev["step"] == 3 and ev["method"] == "run"
    assert (run / "embeddings" / "fused.npy").is_file()
    for key in ("t2i_recall@10", "board_recall@10", "board_mrr", "cold_start_board_recall@10"):
        assert ev["metrics"][key] is not None and 0 <= ev["metrics"][key] <= 1
    stamp = (run / "evaluation.json").stat().st_mtime_ns
    assert load_evaluation(run) == ev
    assert (run / "evaluation.json").stat().st_mtime_ns == stamp
    assert main(["evaluate", str(run), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "board_recall@10" in out and CHANCE_ROW in out       # the chance level as a reference row
    assert ev["chance"]["t2i_recall@10"] is not None            # every pin of the tiny world has an image
    # report plots the run's training loss from RUN_DIR/metrics.jsonl
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert CHANCE_ROW in capsys.readouterr().out
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "(training_loss.png)" in md and (tmp_path / "rep" / "training_loss.png").stat().st_size > 1000


def test_users_own_csv_dataset_trains_evaluates_and_reports(tiny_world, make_config, tmp_path, capsys):
    """A dataset in the DESIGN.md format that is not the synthetic world (CSV tables, string ids,
    pins without image or text, no truth files) goes through train / evaluate / report unchanged."""
    import shutil

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from training.cli import main

    ds = tmp_path / "my_pins"
    shutil.copytree(tiny_world / "images", ds / "images")
    pins = pq.read_table(tiny_world / "pins.parquet").to_pydict()
    n = len(pins["pin_id"])
    pins["pin_id"] = [f"pin-{i:04d}" for i in pins["pin_id"]]
    pins["image"] = [None if i % 7 == 0 else p for i, p in enumerate(pins["image"])]
    pins["text"] = [None if i % 5 == 0 else t for i, t in enumerate(pins["text"])]
    import pyarrow as pa
    pcsv.write_csv(pa.table({k: pins[k] for k in ("pin_id", "text", "image")}), ds / "pins.csv")
    boards = pq.read_table(tiny_world / "boards.parquet").to_pydict()
    pcsv.write_csv(pa.table({"board_id": [f"board-{b}" for b in boards["board_id"]], "name": boards["name"]}),
                   ds / "boards.csv")
    edges = pq.read_table(tiny_world / "edges.parquet").to_pydict()
    pcsv.write_csv(pa.table({"pin_id": [f"pin-{p:04d}" for p in edges["pin_id"]],
                             "board_id": [f"board-{b}" for b in edges["board_id"]]}), ds / "edges.csv")
    cfg = make_config(train={"max_steps": 2, "checkpoint_every": 2})
    cfg["data"].update(dataset=str(ds), cold_start_fraction=0.1)
    import yaml
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "mine"
    assert main(["train", "--config", str(tmp_path / "cfg.yaml"), "--out", str(run)]) == 0
    assert main(["evaluate", str(run), "--json", "--quiet"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["counts"]["pins"] == n
    assert "topic_purity@10" not in ev["neighborhood"]           # no truth files: no purity
    assert ev["metrics"]["board_recall@10"] is not None
    assert ev["metrics"]["cold_start_board_recall@10"] is not None
    assert main(["report", str(run), "--out", str(tmp_path / "rep"), "--quiet"]) == 0
    assert "mine" in json.loads((tmp_path / "rep" / "metrics.json").read_text())
    assert (tmp_path / "rep" / "projection_mine.png").stat().st_size > 1000
