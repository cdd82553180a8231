"""Frozen-text and graph-only baselines; plots."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.evaluation.baselines import frozen_text_embeddings, train_graph_baseline
from training.evaluation.retrieval import board_mate_positives, pin_retrieval
from training.evaluation import plots


def test_frozen_text_same_topic_closer():
    texts = ["a chocolate cake with strawberries", "baking a vanilla birthday cake",
             "a red sports car on the highway", "vintage cars at an auto show", None]
    e = frozen_text_embeddings(texts, batch_size=2, progress=False)
    assert e.shape == (5, 384) and e.dtype == torch.float32
    assert torch.allclose(e[:4].norm(dim=1), torch.ones(4), atol=1e-5)
    assert torch.equal(e[4], torch.zeros(384))
    s = e @ e.T
    assert s[0, 1] > s[0, 2] and s[0, 1] > s[0, 3]
    assert s[2, 3] > s[2, 0] and s[2, 3] > s[2, 1]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from graph.dataset import load_dataset_graph
    from graph.synth import synthesize
    d = tmp_path_factory.mktemp("world") / "w"
    synthesize(d, 600, 40, seed=0, images=False, progress=False)
    return load_dataset_graph(d)


def test_graph_baseline_beats_its_init(small_world):
    from graph.splits import TEST, VAL
    g = small_world
    tg = g.train_graph()
    pins, boards = g.edges()
    held = torch.from_numpy(g.splits.mask(TEST) | g.splits.mask(VAL))
    tp, tb = tg.edges()
    qp, pos = board_mate_positives(pins[held], boards[held], tp, tb, num_pins=g.num_pins)
    init = train_graph_baseline(tg, dim=32, steps=0, seed=0)
    trained = train_graph_baseline(tg, dim=32, steps=60, batch_size=256, seed=0)
    assert trained.embeddings.shape == (g.num_pins, 32)
    r0 = pin_retrieval(init.embeddings, qp, pos, ks=(10,))
    r1 = pin_retrieval(trained.embeddings, qp, pos, ks=(10,))
    assert r1["board_recall@10"] > r0["board_recall@10"] + 0.1
    assert r1["board_mrr"] > r0["board_mrr"]
    assert trained.losses[-1] < trained.losses[0]
    cold = torch.from_numpy(np.asarray(g.splits.cold_start_pins, dtype=np.int64))
    assert cold.numel() > 0 and not trained.supported[cold].any()
    assert trained.supported[qp].all()


def test_plots_write_pngs(tmp_path):
    emb = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    labels = np.arange(60) % 4
    paths = [
        plots.plot_recall_curves({"a": {1: 0.1, 5: 0.4, 10: 0.6}, "b": {1: 0.2, 10: None}}, tmp_path / "r.png"),
        plots.plot_cold_warm_bars({"pinclip": {"warm": 0.5, "cold": 0.3}, "graph_only": {"warm": 0.6, "cold": None}},
                                  tmp_path / "cw.png"),
        plots.plot_projection(emb, labels, tmp_path / "pca.png"),
        plots.plot_similarity_histogram(emb, [[0, 4], [1, 5]], tmp_path / "sim.png", num_negatives=200),
        plots.plot_training_loss({"a": ([1, 2, 3], [2.0, float("nan"), 1.0]), "b": ([], [])}, tmp_path / "loss.png"),
    ]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    xy = plots.pca_2d(emb)
    assert xy.shape == (60, 2) and xy.dtype == np.float32
