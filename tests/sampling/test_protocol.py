"""Every sampler ``build_sampler`` makes is a ``sampling.protocol.Sampler``; ``sample`` agrees with
the samplers' own entry points; ``build_sampler``'s trainer keywords."""
from __future__ import annotations

import functools

import pytest
import torch

from sampling import (FanoutOutput, ImportanceNeighbors, NeighborPairs, PixieSampler, RandomWalkSampler, Sampler,
                      build_sampler, load_sampler_config, random_walk)
from sampling.config import KINDS

OUTPUTS = {"random_walk": torch.Tensor, "pinsage": ImportanceNeighbors, "pixie": ImportanceNeighbors,
           "fanout": FanoutOutput, "pairs": NeighborPairs}


def _equal(a, b):
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if hasattr(a, "__dataclass_fields__"):
        return all(_equal(getattr(a, f), getattr(b, f)) for f in a.__dataclass_fields__)
    return a == b


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_satisfies_the_sampler_protocol(kind, medium_graph):
    cfg = load_sampler_config({"kind": kind, "exclude_splits": []})
    sampler = build_sampler(cfg, medium_graph)
    assert isinstance(sampler, Sampler)
    seeds = torch.arange(8)
    out = sampler.sample(seeds, generator=torch.Generator().manual_seed(3))
    assert isinstance(out, OUTPUTS[kind])
    again = build_sampler(cfg, medium_graph).sample(seeds, generator=torch.Generator().manual_seed(3))
    assert _equal(out, again)                                        # same generator, same draws


def test_random_walk_sampler_keeps_the_partial_call_form(medium_graph):
    cfg = load_sampler_config({"kind": "random_walk", "random_walk": {"num_hops": 3, "restart_prob": 0.3},
                               "exclude_splits": []})
    rw = build_sampler(cfg, medium_graph)
    assert isinstance(rw, RandomWalkSampler) and not isinstance(rw, functools.partial)
    old = functools.partial(random_walk, rw.graph, num_hops=3, restart_prob=0.3, termination_prob=0.0,
                            weighted=False)
    seeds = torch.arange(20)
    ref = old(seeds, generator=torch.Generator().manual_seed(1))
    assert torch.equal(rw(seeds, generator=torch.Generator().manual_seed(1)), ref)
    assert torch.equal(rw.sample(seeds, generator=torch.Generator().manual_seed(1)), ref)
    assert torch.equal(rw(seeds, generator=torch.Generator().manual_seed(1), num_hops=2),
                       old(seeds, generator=torch.Generator().manual_seed(1), num_hops=2))
    assert ref.shape == (20, 7)


def test_pixie_sample_is_single_pin_queries(medium_graph):
    p = build_sampler(load_sampler_config({"kind": "pixie", "exclude_splits": []}), medium_graph)
    assert isinstance(p, PixieSampler)
    seeds = torch.arange(5)
    a = p.sample(seeds, generator=torch.Generator().manual_seed(2))
    b = p.query_batch(seeds[:, None], generator=torch.Generator().manual_seed(2))
    assert _equal(a, b)


def test_build_sampler_trainer_keywords(medium_graph):
    cfg = load_sampler_config({"kind": "pairs", "exclude_splits": [],
                               "pairs": {"num_negatives": 6, "num_hard_negatives": 2}})
    pool = torch.arange(10, 50)
    s = build_sampler(cfg, medium_graph, negative_pool=pool)
    assert torch.equal(s.negative_pool, pool) and (s.num_negatives, s.num_hard_negatives) == (6, 2)
    assert set(s.sample(torch.arange(4)).negatives.tolist()) <= set(pool.tolist())
    off = build_sampler(cfg, medium_graph, negative_pool=pool, use_negatives=False)
    assert (off.num_negatives, off.num_hard_negatives) == (0, 0)
