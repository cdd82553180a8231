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
