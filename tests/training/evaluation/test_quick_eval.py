"""The trainer's quick retrieval metrics on the tiny world's ground truth."""
from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from graph.dataset import load_dataset_graph
from training.evaluation.quick_eval import board_centroid_recall, quick_eval


def test_board_centroid_recall_ranks_and_excludes():
    centroids = F.normalize(torch.eye(3), dim=1)
    query = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.9]])
    assert board_centroid_recall(query, torch.tensor([0, 2]), centroids, k=1) == 0.5
    # Excluding board 1 for row 1 lifts board 2 to the top.
    assert board_centroid_recall(query, torch.tensor([0, 2]), centroids, k=1,
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
    assert good["board_centroid_recall@3"] > 0.9 and good["cold_start_board_centroid_recall@3"] > 0.9
    assert bad["board_centroid_recall@3"] < good["board_centroid_recall@3"]
    assert bad["cold_start_board_centroid_recall@3"] < 0.6
    # The centroid metric has its own name: `pinclip evaluate`'s board_recall@K is pin -> board mates.
    assert not any(k.startswith(("board_recall", "cold_start_board_recall")) for k in good)
    assert isinstance(good["t2i_recall@1"], float)      # the tiny world: every pin has an image


def test_image_text_metrics_skip_pins_without_an_image(tmp_path):
    """A world without images: every image embedding is the same (the zero image), so a ranking
    among them would read as perfect; the metric is None, not 1.0."""
    from graph.synth import synthesize
    world = tmp_path / "world"
    synthesize(world, num_pins=60, num_boards=6, seed=0, image_size=16, images=False, workers=1, progress=False)
    g = load_dataset_graph(world)
    same = F.normalize(torch.ones(g.num_pins, 8), dim=1)
    text = F.normalize(torch.randn(g.num_pins, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    out = quick_eval(g, {"image": same, "text": text, "fused": text}, k=3)
    assert out["t2i_recall@1"] is None and out["t2i_recall@3"] is None
    assert out["board_centroid_recall@3"] is not None


def test_image_text_metrics_skip_pins_marked_image_missing(tiny_world):
    g = load_dataset_graph(tiny_world)
    same = F.normalize(torch.ones(g.num_pins, 8), dim=1)
    all_missing = torch.ones(g.num_pins, dtype=torch.bool)
    out = quick_eval(g, {"image": same, "text": same, "fused": same}, k=3, image_missing=all_missing)
    assert out["t2i_recall@1"] is None
