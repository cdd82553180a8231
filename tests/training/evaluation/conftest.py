"""Shared fixtures of the evaluation tests."""
from __future__ import annotations


def synthetic_store(tmp_path_factory, name: str, pins: int, boards: int):
    """(graph store path, graph, truth) of a synthetic world without images (world seed 1, split
    seed 0), built under a fresh temporary directory ``name``."""
    from graph.dataset import build_graph_from_dataset
    from graph.synth import read_truth, synthesize
    root = tmp_path_factory.mktemp(name)
    synthesize(root / "world", pins, boards, seed=1, images=False, progress=False)
    g = build_graph_from_dataset(root / "world", root / "graph", seed=0, progress=False)
    return root / "graph", g, read_truth(root / "world")


def board_embeddings(g, noise: float, seed: int, dim: int = 32):
    """float [P, dim]: embeddings that know each pin's first board (good board-mate retrieval),
    plus ``noise`` times standard normal noise, drawn from ``torch.Generator().manual_seed(seed)``."""
    import numpy as np
    import torch
    gen = torch.Generator().manual_seed(seed)
    centers = torch.randn(g.num_boards, dim, generator=gen)
    indptr, indices = np.asarray(g.pin_indptr), np.asarray(g.pin_indices)
    first = np.where(indptr[1:] > indptr[:-1], indices[np.minimum(indptr[:-1], len(indices) - 1)], 0)
    return centers[torch.from_numpy(first.astype(np.int64))] + noise * torch.randn(g.num_pins, dim, generator=gen)
