"""Neighbor-alignment pairs: positives, masks, negatives, and the loss contract."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graph import PinBoardGraph
from sampling import NeighborPairSampler, SamplingGraph, build_sampler, load_sampler_config
from sampling.pairs import false_negative_mask


def brute_mask(g, seeds, cand, neighbors):
    boards = {p: set(g.boards_of(p).tolist()) for p in range(g.num_pins)}
    out = np.zeros((len(seeds), len(cand)), dtype=bool)
    for i, s in enumerate(seeds):
        nbr = set(x for x in neighbors[i] if x >= 0)
        for j, c in enumerate(cand):
            if c < 0:
                continue
            out[i, j] = c == s or c in nbr or bool(boards[s] & boards[c])
    return out


def test_shapes_and_contract(medium_graph):
    s = NeighborPairSampler(medium_graph, 4, num_negatives=32, num_hard_negatives=3, seed=0)
    seeds = torch.arange(0, 1000, 25)
    pr = s.sample(seeds)
    S, K = seeds.numel(), 4
    assert pr.positives.shape == (S, K) and pr.positives.dtype == torch.int64
    assert pr.positive_weights.shape == (S, K) and pr.positive_weights.dtype == torch.float32
    assert pr.false_negative_mask.shape == (S, S * K) and pr.false_negative_mask.dtype == torch.bool
    assert pr.negatives.shape == (32,) and pr.negative_mask.shape == (S, 32)
    assert pr.hard_negatives.shape == (S, 3)
    assert ((pr.positives < 0) == (pr.positive_weights == 0)).all()
    # positives come from the seed's top-T, with their visit counts as weights
    for i in range(S):
        row = dict(zip(pr.neighborhoods.neighbors[i].tolist(), pr.neighborhoods.weights[i].tolist()))
        for p, w in zip(pr.positives[i].tolist(), pr.positive_weights[i].tolist()):
            if p >= 0:
                assert row[p] == w
        present = [p for p in pr.positives[i].tolist() if p >= 0]
        assert len(set(present)) == len(present)                       # without replacement
        assert len(present) == min(K, int((pr.neighborhoods.neighbors[i] >= 0).sum()))
    pins = pr.pins()
    assert torch.equal(pins, torch.unique(pins)) and torch.isin(seeds, pins).all()


def test_masks_match_brute_force(medium_graph):
    s = NeighborPairSampler(medium_graph, 3, num_negatives=40, num_hard_negatives=4, hard_rank_range=(10, 13),
                            seed=1)
    seeds = torch.tensor([1, 2, 3, 50, 51, 700, 1999])
    pr = s.sample(seeds)
    nbrs = pr.neighborhoods.neighbors.tolist()
    cand = pr.positives.flatten().tolist()
    assert (pr.false_negative_mask.numpy() == brute_mask(medium_graph, seeds.tolist(), cand, nbrs)).all()
    assert (pr.negative_mask.numpy() == brute_mask(medium_graph, seeds.tolist(), pr.negatives.tolist(), nbrs)).all()
    hard = pr.hard_negatives.flatten()
    assert (hard < 0).any()                  # a 3-wide band for 4 hard negatives: padding present
    expect = brute_mask(medium_graph, seeds.tolist(), hard.tolist(), nbrs) | (hard < 0).numpy()[None, :]
    assert (pr.hard_negative_mask.numpy() == expect).all()
    ids, mask = pr.extra_negatives()
    assert ids.shape == (40 + 7 * 4,) and mask.shape == (7, 40 + 7 * 4)
    # own positives are importance neighbors -> masked; padding columns are not
    own = pr.false_negative_mask.reshape(len(seeds), len(seeds), 3)[torch.arange(len(seeds)), torch.arange(len(seeds))]
    assert torch.equal(own, pr.positives >= 0)


def test_mask_without_shared_boards(medium_graph):
    sg = SamplingGraph.from_graph(medium_graph)
    seeds = torch.tensor([4, 5])
    nbrs = torch.tensor([[10, 11, -1], [12, -1, -1]])
    cand = torch.tensor([4, 10, 12, -1, 5, 99])
    m = false_negative_mask(sg, seeds, cand, nbrs, shared_boards=False)
    assert m.tolist() == [[True, True, False, False, False, False], [False, False, True, False, True, False]]


def test_positives_are_drawn_in_proportion_to_visit_counts():
    """A seed whose top-T neighborhood has (nearly) fixed counts: the first-drawn positive's
    frequency follows count / total (5 sigma). Star graph: seed 0 on board 0 with pins 1..4,
    and on boards 1 and 2 with pin 1, board 1 also with pin 2."""
    g = PinBoardGraph.from_edges([0, 1, 2, 3, 4, 0, 1, 0, 1, 2], [0, 0, 0, 0, 0, 1, 1, 2, 2, 1], 5, 3)
    s = NeighborPairSampler(g, 1, num_traversals=1, termination_prob=0.0, num_random_walks=3000,
                            num_neighbors=4, mask_shared_boards=True, seed=0)
    reps = 1500
    seeds = torch.zeros(reps, dtype=torch.long)
    pr = s.sample(seeds)
    # the draw is proportional to the counts of the same batch row
    picked = pr.positives[:, 0]
    w = pr.neighborhoods.weights.double()
    prob = (w * (pr.neighborhoods.neighbors == picked[:, None])).sum(1) / w.sum(1)
    # E[indicator] = prob; check the mean of (indicator - prob) over rows for each candidate pin
    for pin in range(1, 5):
        ind = (picked == pin).double()
        p_pin = (w * (pr.neighborhoods.neighbors == pin)).sum(1) / w.sum(1)
        sd = np.sqrt(float((p_pin * (1 - p_pin)).sum())) + 1e-9
        assert abs(float((ind - p_pin).sum())) < 5 * sd
    assert (prob > 0).all()


def test_hard_negatives_band(medium_graph):
    s = NeighborPairSampler(medium_graph, 2, num_hard_negatives=5, hard_rank_range=(10, 60), seed=3)
    seeds = torch.arange(0, 2000, 97)
    pr = s.sample(seeds)
    sg = s.graph
    for i, seed in enumerate(seeds.tolist()):
        hard = [p for p in pr.hard_negatives[i].tolist() if p >= 0]
        assert len(set(hard)) == len(hard) and seed not in hard
        assert not set(hard) & set(pr.neighborhoods.neighbors[i].tolist())
        sb = set(medium_graph.boards_of(seed).tolist())
        for p in hard:
            assert not sb & set(medium_graph.boards_of(p).tolist())
    assert (pr.hard_negatives >= 0).any()
    none = s.sample(seeds, num_hard_negatives=0)
    assert none.hard_negatives.shape == (len(seeds), 0)
    del sg


def test_negative_pool_and_weighting(medium_graph):
    pool = torch.arange(100, 200)
    s = NeighborPairSampler(medium_graph, 2, num_negatives=50, negative_pool=pool, positive_weighting="uniform")
    pr = s.sample(torch.tensor([0, 1]))
    assert torch.isin(pr.negatives, pool).all()
    assert set(pr.positive_weights.unique().tolist()) <= {0.0, 1.0}


def test_determinism_and_generator(medium_graph):
    s = NeighborPairSampler(medium_graph, 3, num_negatives=8, num_hard_negatives=2)
    seeds = torch.arange(30)
    a = s.sample(seeds, generator=torch.Generator().manual_seed(1))
    b = s.sample(seeds, generator=torch.Generator().manual_seed(1))
    for f in ("positives", "positive_weights", "false_negative_mask", "negatives", "hard_negatives"):
        assert torch.equal(getattr(a, f), getattr(b, f))


def test_exclusion_reaches_the_walks(tiny_graph):
    sg = SamplingGraph.from_graph(tiny_graph)
    s = NeighborPairSampler(sg, 2, num_random_walks=300, num_neighbors=6)
    ex = sg.exclusion_of_pairs(torch.tensor([1]), torch.tensor([0]))   # pin 1's only edge
    pr = s.sample(torch.tensor([0, 2]), exclude_edges=ex)
    assert not (pr.positives == 1).any() and not (pr.neighborhoods.neighbors == 1).any()


def test_validation(medium_graph):
    with pytest.raises(ValueError, match="num_positives"):
        NeighborPairSampler(medium_graph, 11, num_neighbors=10)
    with pytest.raises(ValueError, match="hard_rank_range"):
        NeighborPairSampler(medium_graph, 2, hard_rank_range=(5, 5))
    with pytest.raises(ValueError, match="positive_weighting"):
        NeighborPairSampler(medium_graph, 2, positive_weighting="log")


def test_feeds_the_neighbor_alignment_loss(medium_graph):
    """The output plugs into pinclip's loss as documented: neighbor_weights = positive_weights,
    false_negative_mask as is."""
    losses = pytest.importorskip("pinclip.losses")
    s = build_sampler(load_sampler_config("neighbor_pairs", ["loader.num_workers=0"]), medium_graph)
    pr = s.sample(torch.arange(16))
    S, K = pr.positives.shape
    emb = torch.nn.functional.normalize(torch.randn(medium_graph.num_pins, 8), dim=-1)
    seed_fused = emb[pr.seeds]
    neighbor_fused = emb[pr.positives.clamp_min(0)]
    out = losses.neighbor_alignment_loss(seed_fused, neighbor_fused, pr.positive_weights,
                                         pr.false_negative_mask, 10.0)
    assert all(torch.isfinite(v) for v in out.values())
    ids, mask = pr.extra_negatives()
    try:
        out = losses.neighbor_alignment_loss(seed_fused, neighbor_fused, pr.positive_weights,
                                             pr.false_negative_mask, 10.0,
                                             negatives={"fused_emb": emb[ids.clamp_min(0)]}, negative_mask=mask)
    except TypeError:  # an older loss without extra negatives
        return
    assert all(torch.isfinite(v) for v in out.values())
