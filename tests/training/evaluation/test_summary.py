"""method_metrics: the metrics.json keys of one method on a small synthetic world."""
from __future__ import annotations

import math

import pytest
import torch

from training.evaluation.summary import method_metrics


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from graph.dataset import load_dataset_graph
    from graph.synth import read_truth, synthesize
    d = tmp_path_factory.mktemp("world") / "w"
    synthesize(d, 400, 30, seed=1, images=False, progress=False)
    return load_dataset_graph(d), read_truth(d)


def test_method_metrics_keys_and_ranges(world):
    g, truth = world
    gen = torch.Generator().manual_seed(0)
    P = g.num_pins
    topic = torch.as_tensor(truth.pin_topic).long()
    centers = torch.randn(int(topic.max()) + 1, 16, generator=gen)
    fused = centers[topic] + 0.3 * torch.randn(P, 16, generator=gen)
    emb = {"image": fused + 0.1 * torch.randn(P, 16, generator=gen), "text": fused, "fused": fused}
    m = method_metrics(g, emb, max_overlap_seeds=50)
    for key in ("t2i_recall@1", "t2i_recall@5", "t2i_recall@10", "i2t_recall@1", "i2t_recall@5",
                "i2t_recall@10", "board_recall@10", "board_mrr", "cold_start_board_recall@10",
                "neighbor_overlap@10"):
        assert key in m and 0.0 <= m[key] <= 1.0, key
    assert m["t2i_recall@10"] >= m["t2i_recall@1"]
    rand = method_metrics(g, {"fused": torch.randn(P, 16, generator=gen)}, max_overlap_seeds=50)
    assert "t2i_recall@1" not in rand
    assert m["board_recall@10"] > rand["board_recall@10"]


def test_unsupported_cold_start_is_none(world):
    g, _ = world
    sup = ~g.splits.is_cold_start(g.num_pins)
    m = method_metrics(g, {"fused": torch.randn(g.num_pins, 8)}, supported=sup, max_overlap_seeds=20)
    assert m["cold_start_board_recall@10"] is None
    assert not math.isnan(m["board_recall@10"])
