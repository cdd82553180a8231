"""The trainer's quick retrieval metrics on the tiny world's ground truth."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from graph.dataset import load_dataset_graph
from training.evaluation.quick_eval import board_recall, quick_eval


def test_board_recall_ranks_and_excludes():
    centroids = F.normalize(torch.eye(3), dim=1)
    query = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.9]])
    assert board_recall(query, torch.tensor([0, 2]), centroids, k=1) == 0.5
    # Excluding board 1 for row 1 lifts board 2 to the top.
    assert board_recall(query, torch.tensor([0, 2]), centroids, k=1,
                        exclude=(torch.tensor([1]), torch.tensor([1]))) == 1.0


def test_truth_embeddings_beat_random_ones(tiny_world):
    g = load_dataset_graph(tiny_world)
    truth = pq.read_table(tiny_world / "truth_pins.parquet").to_pydict()
    combo = np.asarray(truth["style"]) * 100 + np.asarray(truth["topic"])
    _, idx = np.unique(combo, return_inverse=True)
    onehot = F.one_hot(torch.from_numpy(idx), int(idx.max()) + 1).float()
    good = quick_eval(g, {"image": onehot, "text": onehot, "fused": onehot}, k=3)
    noise = F.normalize(torch.randn(g.num_pins, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    bad = quick_eval(g, {"image": noise, "text": noise, "fused": noise}, k=3)
    assert good["num_heldout_edges"] > 0 and good["num_cold_start_edges"] > 0
    assert good["board_recall@3"] > 0.9 and good["cold_start_board_recall@3"] > 0.9
    assert bad["board_recall@3"] < good["board_recall@3"] and bad["cold_start_board_recall@3"] < 0.6
