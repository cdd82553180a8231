"""Neighborhood-quality metrics on hand-made cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from graph import PinBoardGraph
from training.evaluation.neighborhood import (alignment, board_coherence, knn, neighbor_overlap, purity_at_k,
                                              synthetic_purity, uniformity, walk_neighbor_overlap)

# two tight clusters: pins 0-2 near e1, pins 3-5 near e2
EMB = torch.tensor([[1.0, 0.0], [0.99, 0.05], [0.98, 0.1], [0.0, 1.0], [0.05, 0.99], [0.1, 0.98]])


def test_knn_excludes_self():
    nn_ = knn(EMB, torch.tensor([0, 3]), 2)
    assert sorted(nn_[0].tolist()) == [1, 2] and sorted(nn_[1].tolist()) == [4, 5]


def test_neighbor_overlap_hand_made():
    walks = torch.tensor([[1, 2, -1], [0, 5, -1]])      # pin 0: {1, 2}; pin 3: {0, 5}
    ov = neighbor_overlap(EMB, torch.tensor([0, 3]), walks, k=2)
    assert ov == pytest.approx((2 / 2 + 1 / 2) / 2)
    assert math.isnan(neighbor_overlap(EMB, torch.tensor([0]), torch.tensor([[-1, -1]]), k=2))


def test_walk_neighbor_overlap_on_graph():
    g = PinBoardGraph.from_edges([0, 1, 2, 3, 4, 5], [0, 0, 0, 1, 1, 1])
    assert walk_neighbor_overlap(EMB, g, torch.arange(6), k=2, num_random_walks=50) == pytest.approx(1.0)
    flipped = EMB[[0, 3, 1, 4, 2, 5]]       # clusters no longer match boards
    assert walk_neighbor_overlap(flipped, g, torch.arange(6), k=2, num_random_walks=50) < 0.5


def _coherence_reference(emb, pins, boards):
    e = F.normalize(emb, dim=1)
    intra, inter = [], []
    for i in range(len(pins)):
        for j in range(len(pins)):
            if i == j:
                continue
            s = float(e[pins[i]] @ e[pins[j]])
            (intra if boards[i] == boards[j] else inter).append(s)
    return np.mean(intra), np.mean(inter)


def test_board_coherence_matches_pairs():
    pins, boards = [0, 1, 2, 3, 4, 5, 2], [0, 0, 0, 1, 1, 1, 1]
    got = board_coherence(EMB, pins, boards)
    intra, inter = _coherence_reference(EMB, pins, boards)
    assert got["intra"] == pytest.approx(intra) and got["inter"] == pytest.approx(inter)
    assert got["coherence"] == pytest.approx(intra - inter) and got["coherence"] > 0.3


def test_alignment_uniformity():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    assert alignment(x, x) == pytest.approx(0.0)
    assert alignment(x, -x) == pytest.approx(4.0)
    collapsed = torch.ones(50, 4)
    assert uniformity(collapsed) == pytest.approx(0.0, abs=1e-9)
    assert uniformity(x) < -0.5
    e = F.normalize(x.double(), dim=1)
    d = torch.cdist(e, e).pow(2)
    iu = torch.triu_indices(50, 50, 1)
    ref = float(torch.log(torch.exp(-2 * d[iu[0], iu[1]]).mean()))
    assert uniformity(x) == pytest.approx(ref, rel=1e-6)


def test_purity_hand_made():
    labels = np.array([0, 0, 0, 1, 1, 1])
    assert purity_at_k(EMB, labels, k=2) == 1.0
    assert purity_at_k(EMB, labels, k=3) == pytest.approx(2 / 3)
    labels2 = np.array([0, 0, -1, 1, 1, 1])       # unknown labels: not a query, never a match
    assert purity_at_k(EMB, labels2, k=2, query_pins=[0]) == pytest.approx(1 / 2)

    class Truth:
        pin_topic = np.array([0, 0, 0, 1, 1, 1])
        pin_style = np.array([0, 1, 0, 1, 1, 1])
    p = synthetic_purity(EMB, Truth, k=2)
    assert p["topic_purity@2"] == 1.0
    assert p["topic_style_purity@2"] <= p["style_purity@2"]
