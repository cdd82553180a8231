"""Loader: same samples whatever the number of workers, sharding, exact resume, shared memory."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from graph import PinBoardGraph
from sampling import (NeighborPairDataset, NeighborPairLoader, NeighborPairSampler, SeedBatches,
                      batch_generator, build_pair_loader, load_sampler_config)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def pair_sampler(medium_graph):
    return NeighborPairSampler(medium_graph, 3, num_random_walks=30, num_negatives=8, num_hard_negatives=2,
                               hard_num_random_walks=60, seed=0)


def collect(loader, limit=None):
    out = []
    for item in loader:
        out.append(item)
        if limit is not None and len(out) >= limit:
            break
    return out


def same(a, b):
    assert (a.epoch, a.index) == (b.epoch, b.index)
    for f in ("seeds", "positives", "positive_weights", "false_negative_mask", "negatives", "hard_negatives"):
        assert torch.equal(getattr(a.pairs, f), getattr(b.pairs, f)), f


def test_same_samples_whatever_the_number_of_workers(pair_sampler):
    runs = {}
    for workers in (0, 1, 2):
        ds = NeighborPairDataset(pair_sampler, SeedBatches(300, 64, seed=1), seed=7, hard_curriculum=True)
        runs[workers] = collect(NeighborPairLoader(ds, workers, multiprocessing_context="fork" if workers else None))
    assert [(i.epoch, i.index) for i in runs[0]] == [(0, b) for b in range(5)]
    for workers in (1, 2):
        for a, b in zip(runs[0], runs[workers], strict=True):
            same(a, b)
    # and the sampler's own generator is not involved: an unrelated draw in between changes nothing
    pair_sampler.sample(torch.arange(3))
    ds = NeighborPairDataset(pair_sampler, SeedBatches(300, 64, seed=1), seed=7, hard_curriculum=True)
    same(ds[(0, 3)], runs[0][3])


def test_epochs_shuffle_and_curriculum(pair_sampler):
    ds = NeighborPairDataset(pair_sampler, SeedBatches(300, 100, seed=1), seed=7, hard_curriculum=True)
    loader = NeighborPairLoader(ds)
    e0, e1, e2 = collect(loader), collect(loader), collect(loader)
    seeds = lambda items: torch.cat([i.pairs.seeds for i in items])  # noqa: E731
    for e in (e0, e1, e2):
        assert sorted(seeds(e).tolist()) == list(range(300))
    assert not torch.equal(seeds(e0), seeds(e1))
    assert [i.pairs.hard_negatives.shape[1] for i in (e0[0], e1[0], e2[0])] == [0, 1, 2]
    assert loader.epoch == 3


@pytest.mark.parametrize("drop_last", [False, True])
def test_sharding_by_rank(drop_last):
    n, world, bs = 103, 4, 10
    shards = [SeedBatches(torch.arange(1000, 1000 + n), bs, seed=3, rank=r, world_size=world, drop_last=drop_last)
              for r in range(world)]
    lens = {len(s) for s in shards}
    assert len(lens) == 1                                   # every rank runs the same number of batches
    got = torch.cat([s.shard(5) for s in shards])
    if drop_last:
        assert got.numel() == n - n % world and torch.unique(got).numel() == got.numel()
    else:
        assert set(got.tolist()) == set(range(1000, 1000 + n))    # everything covered, padding wraps
        assert got.numel() == -(-n // world) * world
    assert {s.global_index(2) for s in shards} == {8, 9, 10, 11}


def test_ranks_get_distinct_generators(pair_sampler):
    a = NeighborPairDataset(pair_sampler, SeedBatches(300, 64, seed=1, rank=0, world_size=2), seed=7)
    b = NeighborPairDataset(pair_sampler, SeedBatches(300, 64, seed=1, rank=1, world_size=2), seed=7)
    assert not torch.equal(a[(0, 0)].pairs.seeds, b[(0, 0)].pairs.seeds)
    g1 = torch.rand(4, generator=batch_generator(7, 0, 1))
    assert torch.equal(g1, torch.rand(4, generator=batch_generator(7, 0, 1)))
    assert not torch.equal(g1, torch.rand(4, generator=batch_generator(7, 0, 2)))
    assert not torch.equal(g1, torch.rand(4, generator=batch_generator(7, 1, 1)))


def test_state_dict_resumes_exactly(pair_sampler):
    def make():
        ds = NeighborPairDataset(pair_sampler, SeedBatches(300, 64, seed=1), seed=7)
        return NeighborPairLoader(ds, 2, multiprocessing_context="fork")
    reference = make()
    ref = collect(reference) + collect(reference)                 # two full epochs
    first = make()
    head = collect(first, limit=3)                                 # stop mid-epoch
    state = first.state_dict()
    assert state["epoch"] == 0 and state["next_index"] == 3
    resumed = make()
    resumed.load_state_dict(json.loads(json.dumps(state)))         # survives a JSON checkpoint
    tail = collect(resumed) + collect(resumed)
    for a, b in zip(ref, head + tail, strict=True):
        same(a, b)
    other = NeighborPairLoader(NeighborPairDataset(pair_sampler, SeedBatches(300, 32, seed=1), seed=7))
    with pytest.raises(ValueError, match="batch_size"):
        other.load_state_dict(state)


def test_built_from_the_preset(medium_graph):
    cfg = load_sampler_config("neighbor_pairs", ["loader.num_workers=0", "loader.batch_size=50",
                                                 "pinsage.num_random_walks=20"])
    loader = build_pair_loader(cfg, medium_graph, torch.arange(120))
    items = collect(loader)
    assert [i.pairs.seeds.numel() for i in items] == [50, 50, 20]
    assert items[0].pairs.positives.shape == (50, cfg.pairs.num_positives)


def test_store_backed_sampler_pickles_by_path(tmp_path, medium_graph):
    medium_graph.save(tmp_path / "store")
    g = PinBoardGraph.open(tmp_path / "store")
    s = NeighborPairSampler(g, 2, num_random_walks=20)
    blob = pickle.dumps(s)
    assert len(blob) < 100_000                                     # the path, not the CSR
    s2 = pickle.loads(blob)
    a = s.sample(torch.arange(10), generator=torch.Generator().manual_seed(0))
    b = s2.sample(torch.arange(10), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.positives, b.positives)
    assert s2.graph.pins.indices.numpy().base is not None          # a view of the memory map


def test_workers_share_the_memory_mapped_store(tmp_path):
    """Workers never copy the CSR: run in a fresh process (tests/sampling/rss_probe.py), forked
    workers (1 and 3) and a spawned one sample from a memory-mapped 8M-edge store (64 MiB of
    CSR). Per worker, the memory it wrote (private dirty bytes, psutil) grows by less than 40% of
    the CSR size while sampling, no store page is ever copied, and the store's pages are shared
    between workers. A negative control whose workers copy the CSR must grow by at least 90%
    of it, so the measurement is sensitive enough."""
    rng = np.random.default_rng(0)
    P, B, E = 400_000, 40_000, 8_000_000
    PinBoardGraph.from_edges(rng.integers(0, P, E), rng.integers(0, B, E), P, B).save(tmp_path / "store")
    out = tmp_path / "rss.json"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    subprocess.run([sys.executable, str(Path(__file__).with_name("rss_probe.py")), str(tmp_path / "store"), str(out)],
                   check=True, env=env, cwd=REPO, timeout=240, capture_output=True)
    r = json.loads(out.read_text())
    csr = r["csr_bytes"]
    assert csr > 60 * 2**20
    for run in ("fork1", "fork3", "spawn1"):
        workers = r[run]["workers"]
        assert len(workers) == int(run[-1])
        for w in workers:
            assert w["end"]["store_private_dirty"] == 0, run
            growth = w["end"]["private_dirty"] - w["start"]["private_dirty"]
            assert growth < 0.4 * csr, (run, growth / 2**20)
    # three forked workers share the store pages with each other (none is private to one)
    assert sum(w["end"]["store_private"] for w in r["fork3"]["workers"]) < 0.1 * csr
    control = r["copy_control"]["workers"][0]
    assert control["end"]["private_dirty"] - control["start"]["private_dirty"] > 0.9 * csr
