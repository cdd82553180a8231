"""Samplers on CUDA, beyond the per-sampler device tests (``test_devices`` in test_walks.py,
test_pinsage.py, test_fanout.py): the neighbor-pair sampler and its masks, a memory-mapped store's
CSR moved to the GPU, and GPU / CPU agreement of the visit-count distributions. Skipped without
CUDA (the development machines have none; run on a GPU host)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sampling import NeighborPairSampler, PinSageSampler, SamplingGraph, random_walk

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _brute_mask():
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location("_pairs_tests", Path(__file__).with_name("test_pairs.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.brute_mask


def test_pair_sampler_on_cuda_matches_the_brute_force_masks(medium_graph):
    brute_mask = _brute_mask()

    s = NeighborPairSampler(medium_graph, 3, num_negatives=40, num_hard_negatives=4, hard_rank_range=(10, 13),
                            seed=1, device="cuda")
    seeds = torch.tensor([1, 2, 3, 50, 51, 700, 1999], device="cuda")
    pr = s.sample(seeds)
    for name in ("positives", "positive_weights", "false_negative_mask", "negatives", "negative_mask",
                 "hard_negatives", "hard_negative_mask"):
        assert getattr(pr, name).is_cuda, name
    cpu = pr.to("cpu")
    nbrs = cpu.neighborhoods.neighbors.tolist()
    cand = cpu.positives.flatten().tolist()
    assert (cpu.false_negative_mask.numpy() == brute_mask(medium_graph, seeds.tolist(), cand, nbrs)).all()
    assert (cpu.negative_mask.numpy() == brute_mask(medium_graph, seeds.tolist(), cpu.negatives.tolist(), nbrs)).all()


def test_memory_mapped_store_moves_to_cuda(medium_graph, tmp_path):
    from graph import PinBoardGraph
    medium_graph.save(tmp_path / "g")
    g = PinBoardGraph.open(tmp_path / "g")
    sg = SamplingGraph.from_graph(g, "cuda")
    traces = random_walk(sg, torch.arange(200, device="cuda"), 3, 0.0,
                         torch.Generator(device="cuda").manual_seed(0))
    assert traces.is_cuda and traces.shape == (200, 7)
    t = traces.cpu().numpy()
    pin_adj = g.to_scipy("pin").tocsr()
    for row in t:                                   # every pin -> board step follows an edge
        for i in range(0, 6, 2):
            if row[i + 1] >= 0:
                assert pin_adj[row[i], row[i + 1]] != 0


def test_pinsage_visit_distribution_agrees_across_devices(medium_graph):
    """GPU and CPU draw different random numbers; their visit-count distributions must agree as
    closely as two CPU runs with different seeds do (total variation distance)."""
    seeds = torch.arange(0, 2000, 100)

    def dist(device, seed):
        nb = PinSageSampler(medium_graph, 3, 0.5, 4000, 50, seed=seed, device=device).sample(seeds.to(device))
        out = np.zeros((seeds.numel(), medium_graph.num_pins))
        n, w = nb.neighbors.cpu().numpy(), nb.weights.cpu().numpy().astype(np.float64)
        for i in range(seeds.numel()):
            ok = n[i] >= 0
            out[i, n[i][ok]] = w[i][ok]
        return out / np.maximum(out.sum(1, keepdims=True), 1)

    ref, cpu2, gpu = dist("cpu", 0), dist("cpu", 1), dist("cuda", 0)
    tvd_cpu = 0.5 * np.abs(ref - cpu2).sum(1).mean()
    tvd_gpu = 0.5 * np.abs(ref - gpu).sum(1).mean()
    assert tvd_gpu <= 1.5 * tvd_cpu + 0.02, (tvd_gpu, tvd_cpu)
