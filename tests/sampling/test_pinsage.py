"""PinSage importance neighborhoods and Pixie queries."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from graph import PinBoardGraph
from sampling import PinSageSampler, PixieSampler, SamplingGraph, load_sampler_config, build_sampler
from sampling.neighborhoods import count_visits, top_per_row
from sampling.pinsage import pinsage_visits

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_interface(medium_graph):
    s = PinSageSampler(medium_graph, num_traversals=3, termination_prob=0.5, num_random_walks=200,
                       num_neighbors=10, seed=0)
    seeds = torch.tensor([5, 17, 17, 1999])
    nb = s.sample(seeds)
    assert nb.neighbors.dtype == torch.int64 and nb.neighbors.shape == (4, 10)
    assert nb.weights.shape == (4, 10) and nb.weights.dtype == torch.float32
    assert torch.equal(nb.seeds, seeds)
    assert not (nb.neighbors == seeds[:, None]).any()                  # seed excluded
    assert (nb.weights[:, :-1] >= nb.weights[:, 1:]).all()             # most visited first
    assert ((nb.neighbors < 0) == (nb.weights == 0)).all()
    assert (nb.total_visits >= nb.weights.sum(1)).all()
    src, dst, w = nb.edges()
    assert src.shape == dst.shape == w.shape and (w > 0).all()
    assert s(seeds).neighbors.shape == (4, 10)                         # __call__ alias


def test_counts_and_tie_break_match_a_naive_count(small_graph):
    """Neighbors and weights are exactly the top-T of a plain Counter over the same visits,
    ordered by (count desc, pin asc), seed excluded; isolated seeds get nothing."""
    sg = SamplingGraph.from_graph(small_graph)
    seeds = torch.tensor([0, 1, 2, 58, 3, 0])
    s = PinSageSampler(sg, 2, 0.3, 40, 6)
    nb = s.sample(seeds, generator=torch.Generator().manual_seed(4))
    rows, pins = pinsage_visits(sg, seeds, 2, 0.3, 40, torch.Generator().manual_seed(4))
    for i, seed in enumerate(seeds.tolist()):
        c = Counter(p for r, p in zip(rows.tolist(), pins.tolist()) if r == i and p != seed)
        ranked = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:6]
        got = [(p, int(w)) for p, w in zip(nb.neighbors[i].tolist(), nb.weights[i].tolist()) if p >= 0]
        assert got == ranked
        assert int(nb.total_visits[i]) == sum(1 for r in rows.tolist() if r == i)
    assert (nb.neighbors[3] == -1).all() and int(nb.total_visits[3]) == 0   # pin 58 is isolated


def test_top_per_row_tie_break():
    rows = torch.tensor([0, 0, 0, 0, 2, 2])
    items = torch.tensor([1, 4, 7, 9, 3, 5])
    for scores in (torch.tensor([2, 5, 5, 2, 1, 1]), torch.tensor([2.0, 5.0, 5.0, 2.0, 1.0, 1.0])):
        top, best = top_per_row(rows, items, scores, 3, 3, 10)
        assert top.tolist() == [[4, 7, 1], [-1, -1, -1], [3, 5, -1]]
        assert best.tolist() == [[5, 5, 2], [0, 0, 0], [1, 1, 0]]
    r, it, c = count_visits(torch.tensor([1, 0, 1, 1, 0]), torch.tensor([3, 2, 3, 0, 2]), 4,
                            drop=torch.tensor([2, 9]))
    assert (r.tolist(), it.tolist(), c.tolist()) == ([1, 1], [0, 3], [1, 2])


def test_visit_frequencies_match_exact_expectation(tiny_graph, transitions):
    """E[visits of pin p per walk] = sum_t (1 - p_term)^(t-1) * P(at p after t traversals).
    Tolerance: 5 standard errors, with the per-walk visit count bounded by T (variance <= T E)."""
    walks, trav, term, seed = 40_000, 3, 0.4, 1
    s = PinSageSampler(tiny_graph, trav, term, walks, 7, seed=3)
    r, pins, counts = s.visit_counts(torch.tensor([seed]))
    freq = np.zeros(tiny_graph.num_pins)
    freq[pins.numpy()] = counts.numpy() / walks
    m_pb, m_bp = transitions(tiny_graph)
    x = np.zeros(tiny_graph.num_pins)
    x[seed] = 1.0
    expect = np.zeros_like(x)
    for t in range(trav):
        x = x @ m_pb @ m_bp
        expect += (1 - term) ** t * x
    expect[seed] = 0.0                                    # the seed is not counted
    tol = 5 * np.sqrt(trav * np.maximum(expect, 1e-4) / walks)
    assert (np.abs(freq - expect) < tol).all(), (freq, expect)
    assert freq[7] == 0.0                                 # isolated pin never visited


def test_termination_one_and_zero(tiny_graph):
    one = PinSageSampler(tiny_graph, 3, 1.0, 50, 5).sample(torch.tensor([0]))
    assert int(one.total_visits[0]) == 50                  # exactly one traversal per walk
    zero = PinSageSampler(tiny_graph, 3, 0.0, 50, 5).sample(torch.tensor([0]))
    assert int(zero.total_visits[0]) == 150


def test_determinism(medium_graph):
    seeds = torch.arange(0, 2000, 37)
    a = PinSageSampler(medium_graph, seed=5).sample(seeds)
    b = PinSageSampler(medium_graph, seed=5).sample(seeds)
    c = PinSageSampler(medium_graph, seed=6).sample(seeds)
    assert torch.equal(a.neighbors, b.neighbors) and torch.equal(a.weights, b.weights)
    assert not torch.equal(a.weights, c.weights)
    s = PinSageSampler(medium_graph, seed=0)
    g1 = s.sample(seeds, generator=torch.Generator().manual_seed(9))
    g2 = s.sample(seeds, generator=torch.Generator().manual_seed(9))
    assert torch.equal(g1.neighbors, g2.neighbors)


def test_exclusion_static_and_per_call_remove_the_edges(tiny_graph):
    """Pin 1 sits on board 0 only; excluding (1, board 0) makes it unreachable. The static
    (rebuilt CSR), per-call (exact skipping) and edge_subgraph routes give the same samples."""
    sg = SamplingGraph.from_graph(tiny_graph)
    ex = sg.exclusion_of_pairs(torch.tensor([1]), torch.tensor([0]))
    assert ex.size == 1
    seeds = torch.tensor([0, 2, 3])
    kw = dict(num_traversals=3, termination_prob=0.2, num_random_walks=500, num_neighbors=7)
    full = PinSageSampler(sg, **kw).sample(seeds, generator=torch.Generator().manual_seed(1))
    assert (full.neighbors == 1).any()
    per_call = PinSageSampler(sg, **kw).sample(seeds, generator=torch.Generator().manual_seed(1),
                                               exclude_edges=ex)
    static = PinSageSampler(sg, exclude_edges=ex.edge_ids, **kw).sample(
        seeds, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(tiny_graph.num_edges, dtype=torch.bool)
    mask[ex.edge_ids] = False
    sub = PinSageSampler(tiny_graph.edge_subgraph(mask), **kw).sample(
        seeds, generator=torch.Generator().manual_seed(1))
    for nb in (per_call, static, sub):
        assert not (nb.neighbors == 1).any()
    assert torch.equal(per_call.neighbors, static.neighbors) and torch.equal(per_call.weights, static.weights)
    assert torch.equal(static.neighbors, sub.neighbors) and torch.equal(static.weights, sub.weights)


def test_without_edges_matches_edge_subgraph(medium_graph):
    rng = np.random.default_rng(0)
    mask = rng.random(medium_graph.num_edges) < 0.3
    sg = SamplingGraph.from_graph(medium_graph).without_edges(torch.from_numpy(mask))
    ref = medium_graph.edge_subgraph(~mask)
    for mine, theirs in ((sg.pins.indptr, ref.pin_indptr), (sg.pins.indices, ref.pin_indices),
                         (sg.boards.indptr, ref.board_indptr), (sg.boards.indices, ref.board_indices),
                         (sg.pins.weights, ref.pin_weights), (sg.boards.weights, ref.board_weights)):
        assert torch.equal(mine, theirs)


def test_edge_id_mappings(medium_graph):
    sg = SamplingGraph.from_graph(medium_graph)
    pins, boards = medium_graph.edges()
    ids = torch.arange(0, medium_graph.num_edges, 7)
    assert torch.equal(sg.edge_ids_of_pairs(pins[ids], boards[ids]), ids)
    bpos = sg.board_positions(ids)
    assert torch.equal(sg.boards.indices[bpos].long(), pins[ids])
    assert torch.equal(sg.edge_ids_of_board_positions(bpos), ids)
    missing = next(b for b in range(medium_graph.num_boards) if b not in set(medium_graph.boards_of(0).tolist()))
    assert sg.edge_ids_of_pairs(torch.tensor([0]), torch.tensor([missing])).tolist() == [-1]
    with pytest.raises(ValueError, match="out of range"):
        sg.exclusion(torch.tensor([medium_graph.num_edges]))
    with pytest.raises(ValueError, match="out of range"):
        sg.edge_ids_of_pairs(torch.tensor([0]), torch.tensor([200]))


def test_validation(tiny_graph):
    with pytest.raises(ValueError, match="num_random_walks"):
        PinSageSampler(tiny_graph, num_random_walks=0)
    with pytest.raises(ValueError, match="termination_prob"):
        PinSageSampler(tiny_graph, termination_prob=1.5)
    with pytest.raises(ValueError, match="out of range"):
        PinSageSampler(tiny_graph).sample(torch.tensor([8]))


def test_built_from_the_preset(medium_graph):
    cfg = load_sampler_config("pinsage_default", ["pinsage.num_neighbors=5"])
    s = build_sampler(cfg, medium_graph)
    assert isinstance(s, PinSageSampler) and s.num_neighbors == 5
    assert s.sample(torch.tensor([0, 1])).neighbors.shape == (2, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_devices(medium_graph, device):
    s = PinSageSampler(medium_graph, device=device, seed=0)
    nb = s.sample(torch.arange(10))
    assert nb.neighbors.device.type == device


def test_weighted_walks_follow_weights():
    # pin 0 on boards 0 (weight 9) and 1 (weight 1); board 0 = {0, 1}, board 1 = {0, 2}.
    g = PinBoardGraph.from_edges([0, 0, 1, 2], [0, 1, 0, 1], 3, 2, weights=[9.0, 1.0, 1.0, 1.0])
    s = PinSageSampler(g, 1, 0.0, 20_000, 2, weighted=True, seed=0)
    r, pins, counts = s.visit_counts(torch.tensor([0]))
    c = dict(zip(pins.tolist(), counts.tolist()))
    # P(pin 1) = 0.9 * 1/(9+1) ... board 0's pins: 0 (w 9), 1 (w 1) -> 0.9 * 0.1 = 0.09;
    # P(pin 2) = 0.1 * 1/(1+1) = 0.05
    assert abs(c[1] / 20_000 - 0.09) < 0.01 and abs(c[2] / 20_000 - 0.05) < 0.008


# ------------------------------------------------------------------------------ Pixie
def test_pixie_query(medium_graph):
    px = PixieSampler(medium_graph, num_walks=400, num_hops=3, restart_prob=0.5, num_neighbors=8, seed=0)
    nb = px.query([3, 4, 5], [1.0, 2.0, 0.5])
    assert nb.neighbors.shape == (1, 8) and int(nb.seeds[0]) == 3
    assert not torch.isin(nb.neighbors, torch.tensor([3, 4, 5])).any()
    assert (nb.weights[0, :-1] >= nb.weights[0, 1:]).all()
    batch = px.query_batch(torch.tensor([[3, 4], [7, -1]]), torch.tensor([[1.0, 1.0], [1.0, 0.0]]))
    assert batch.neighbors.shape == (2, 8)
    again = PixieSampler(medium_graph, num_walks=400, num_hops=3, num_neighbors=8, seed=0).query([3, 4, 5], [1.0, 2.0, 0.5])
    assert torch.equal(again.neighbors, nb.neighbors)


def test_pixie_booster_and_budget(tiny_graph):
    row = torch.tensor([0, 0, 0, 0])
    pin = torch.tensor([5, 5, 6, 4])
    count = torch.tensor([4, 9, 16, 1])      # pin 5 hit from two query pins (4 and 9 visits)
    r, p, score = PixieSampler.combine(row, pin, count, 8, boost=True)
    assert p.tolist() == [4, 5, 6] and score.tolist() == [1.0, 25.0, 16.0]   # (2 + 3)^2 = 25 > 16
    _, _, plain = PixieSampler.combine(row, pin, count, 8, boost=False)
    assert plain.tolist() == [1.0, 13.0, 16.0]
    px = PixieSampler(tiny_graph, num_walks=100, degree_scaling=False)
    b = px.walk_budget(torch.tensor([[0, 1, 7, -1]]), torch.tensor([[3.0, 1.0, 5.0, 1.0]]))
    assert b.tolist() == [[75, 25, 0, 0]]     # pin 7 has no boards, -1 is padding
    scaled = PixieSampler(tiny_graph, num_walks=100).walk_budget(torch.tensor([[0, 1]]), torch.tensor([[1.0, 1.0]]))
    assert scaled[0, 0] > scaled[0, 1]        # pin 0 (2 boards) gets more walks than pin 1 (1 board)


def test_pixie_restart_concentrates_near_the_query(medium_graph):
    far = PixieSampler(medium_graph, 300, 4, restart_prob=0.0, num_neighbors=50, seed=1).query([0])
    near = PixieSampler(medium_graph, 300, 4, restart_prob=0.9, num_neighbors=50, seed=1).query([0])
    one_hop = set(medium_graph.board_indices[torch.cat([
        torch.arange(int(medium_graph.board_indptr[b]), int(medium_graph.board_indptr[b + 1]))
        for b in medium_graph.boards_of(0).tolist()])].tolist())
    share = lambda nb: np.mean([p in one_hop for p in nb.neighbors[0].tolist() if p >= 0])  # noqa: E731
    assert share(near) > share(far)


def test_segment_search_cpu_and_generic_paths_agree(medium_graph):
    from sampling.adjacency import _segment_search_numpy, _segment_search_torch

    sg = SamplingGraph.from_graph(medium_graph)
    rng = np.random.default_rng(1)
    rows = torch.from_numpy(rng.integers(0, medium_graph.num_pins, 5000))
    values = torch.from_numpy(rng.integers(0, medium_graph.num_boards, 5000))
    a = _segment_search_torch(sg.pins.indptr, sg.pins.indices, rows, values)
    b = _segment_search_numpy(sg.pins.indptr.numpy(), sg.pins.indices.numpy(), rows.numpy(), values.numpy())
    assert torch.equal(a, torch.from_numpy(b)) and (a >= 0).any() and (a < 0).any()
    hit = a >= 0
    assert torch.equal(sg.pins.indices[a[hit]].long(), values[hit])


def test_count_visits_cpu_and_generic_paths_agree():
    from sampling.neighborhoods import _count_torch

    rng = np.random.default_rng(2)
    for num_items in (50, 3_000_000):          # 32-bit and 64-bit keys
        rows = torch.from_numpy(rng.integers(0, 900, 20_000))
        items = torch.from_numpy(rng.integers(0, num_items, 20_000) % 60)
        got = count_visits(rows, items, num_items)
        ref = _count_torch(rows, items, num_items)
        assert all(torch.equal(a, b) for a, b in zip(got, ref))
    empty = count_visits(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), 10)
    assert all(t.numel() == 0 for t in empty)


def test_exclude_neighbors_drops_target_pins(medium_graph):
    s = PinSageSampler(medium_graph, seed=0)
    seeds = torch.tensor([3, 4, 5])
    full = s.sample(seeds, generator=torch.Generator().manual_seed(0))
    targets = full.neighbors[:, 0].clone()
    cut = s.sample(seeds, generator=torch.Generator().manual_seed(0), exclude_neighbors=targets)
    assert not (cut.neighbors == targets[:, None]).any()
    assert torch.equal(cut.neighbors[:, :-1], full.neighbors[:, 1:])      # everything else moves up
    two = s.sample(seeds, generator=torch.Generator().manual_seed(0),
                   exclude_neighbors=torch.stack([targets, torch.tensor([-1, -1, -1])], 1))
    assert torch.equal(two.neighbors, cut.neighbors)
    with pytest.raises(ValueError, match="exclude_neighbors"):
        s.sample(seeds, exclude_neighbors=torch.tensor([1, 2]))
