"""Random walks: every step is an edge, exact distributions, determinism, exclusion, general vs
specialized, devices.

Statistical tests use fixed generator seeds (so they are deterministic) and accept a visit
frequency when it is within 5 binomial standard deviations of the exact probability
(``max_z < 5``): with ~100 cells per test the chance that a correct sampler fails one, over the
seeds we could have picked, is about 1e-4.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, strategies as st

from sampling import SamplingGraph, metapath_random_walk, random_walk
from sampling.walks import pin_positions

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def assert_walk_follows_edges(g, traces, excluded_ids=None, restart=False):
    """Every consecutive (pin, board) / (board, pin) in the traces is a kept edge of g (checked
    against scipy's export, minus ``excluded_ids``), and -1 only ever continues to the end.
    With ``restart``, a board may instead be a board of the seed (the walk jumped back to it)."""
    a = np.asarray(g.to_scipy("pin").toarray() != 0)
    if excluded_ids is not None and len(excluded_ids):
        pins, boards = (x.numpy() for x in g.edges())
        a[pins[excluded_ids], boards[excluded_ids]] = False
    t = traces.cpu().numpy()
    stopped = t < 0
    assert (np.diff(stopped.astype(int), axis=1) >= 0).all(), "a walk resumed after -1"
    for j in range(t.shape[1] - 1):
        ok = (t[:, j] >= 0) & (t[:, j + 1] >= 0)
        if j % 2 == 0:
            p, b = t[ok, j], t[ok, j + 1]
        else:
            b, p = t[ok, j], t[ok, j + 1]
        is_edge = a[p, b]
        if restart and j % 2 == 0 and j > 0:
            is_edge |= a[t[ok, 0], b]
        assert is_edge.all(), f"step {j} left the graph (or used an excluded edge)"


@pytest.mark.parametrize("kw", [{}, {"restart_prob": 0.3}, {"termination_prob": 0.4}, {"weighted": True},
                                {"restart_prob": 0.2, "termination_prob": 0.2, "weighted": True}])
def test_every_step_is_an_edge(medium_graph, kw):
    gen = torch.Generator().manual_seed(0)
    seeds = torch.randint(0, medium_graph.num_pins, (3000,), generator=gen)
    traces = random_walk(medium_graph, seeds, num_hops=5, generator=gen, **kw)
    assert traces.dtype == torch.int64 and traces.shape == (3000, 11)
    assert torch.equal(traces[:, 0], seeds)
    assert_walk_follows_edges(medium_graph, traces, restart="restart_prob" in kw)
    isolated = medium_graph.pin_degrees()[seeds] == 0
    assert torch.equal(traces[:, 1] < 0, isolated)
    if "termination_prob" not in kw:
        assert (traces[~isolated] >= 0).all()  # only isolated seeds stop


def test_interface_and_isolated_seeds(small_graph):
    iso = torch.tensor([57, 58, 59])
    traces = random_walk(small_graph, torch.tensor([0, 57, 1, 59]), num_hops=4, restart_prob=0.0,
                         generator=None)
    assert traces.shape == (4, 9)
    assert (traces[[1, 3], 1:] == -1).all() and torch.equal(traces[[1, 3], 0], iso[[0, 2]])
    assert (traces[[0, 2]] >= 0).all()
    # restarts on a batch with isolated seeds must not touch their (absent) edges
    traces = random_walk(small_graph, iso.repeat(50), num_hops=3, restart_prob=0.9)
    assert (traces[:, 1:] == -1).all()
    assert random_walk(small_graph, torch.zeros(0, dtype=torch.long), 3).shape == (0, 7)
    assert random_walk(small_graph, [1, 2], num_hops=0).tolist() == [[1], [2]]
    assert pin_positions(4) == slice(2, 9, 2)


def test_input_validation(small_graph):
    with pytest.raises(ValueError, match="out of range"):
        random_walk(small_graph, torch.tensor([0, 60]), 2)
    with pytest.raises(ValueError, match="restart_prob"):
        random_walk(small_graph, torch.tensor([0]), 2, restart_prob=1.5)
    with pytest.raises(ValueError, match="1-D integer"):
        random_walk(small_graph, torch.tensor([0.5]), 2)
    unweighted = SamplingGraph.from_graph(small_graph, weights=False)
    with pytest.raises(ValueError, match="weights"):
        random_walk(unweighted, torch.tensor([0]), 2, weighted=True)


def test_generator_determinism(medium_graph):
    seeds = torch.arange(500)
    a = random_walk(medium_graph, seeds, 4, 0.2, torch.Generator().manual_seed(7))
    b = random_walk(medium_graph, seeds, 4, 0.2, torch.Generator().manual_seed(7))
    c = random_walk(medium_graph, seeds, 4, 0.2, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("kw", [{}, {"restart_prob": 0.3}, {"termination_prob": 0.4},
                                {"restart_prob": 0.2, "termination_prob": 0.3, "weighted": True}])
@pytest.mark.parametrize("exclude", [False, True])
def test_specialization_matches_general_walk(small_graph, kw, exclude):
    """The bipartite walk is the metapath walk on [pins, boards] * hops, draw for draw."""
    sg = SamplingGraph.from_graph(small_graph)
    seeds = torch.arange(small_graph.num_pins).repeat(3)
    ex = torch.arange(0, small_graph.num_edges, 3) if exclude else None
    hops = 4
    t1 = random_walk(sg, seeds, hops, generator=torch.Generator().manual_seed(3), exclude_edges=ex, **kw)
    per_hop = lambda p: [0.0, 0.0] + [p, 0.0] * (hops - 1)  # noqa: E731  (before pin positions 2, 4, ...)
    excl = sg.exclusion(ex) if exclude else None
    t2 = metapath_random_walk([sg.pins, sg.boards] * hops, seeds,
                              termination_prob=per_hop(kw.get("termination_prob", 0.0)),
                              restart_prob=per_hop(kw.get("restart_prob", 0.0)),
                              weighted=kw.get("weighted", False),
                              exclusions=None if excl is None else [excl.pins, excl.boards] * hops,
                              generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1, t2)


def exact_position_distributions(g, seed, hops, restart=0.0, termination=0.0, weighted=False,
                                 excluded=None, transitions=None):
    """For each trace column j >= 1: the exact distribution over its nodes plus a final
    'stopped' (-1) cell."""
    m_pb, m_bp = transitions(g, weighted, excluded)
    x = np.zeros(g.num_pins)
    x[seed] = 1.0
    e = x.copy()
    alive = 1.0 if m_pb[seed].sum() > 0 else 0.0
    x = x * alive
    out = []
    for h in range(hops):
        if h > 0:
            x = (1 - termination) * x                    # termination draw first,
            x = (1 - restart) * x + restart * e * x.sum()  # then restart (of live walks)
        b = x @ m_pb
        out.append(np.append(b, 1 - b.sum()))
        x = b @ m_bp
        out.append(np.append(x, 1 - x.sum()))
    return out


def empirical_position_distributions(traces, num_pins, num_boards):
    t = traces.numpy()
    out = []
    for j in range(1, t.shape[1]):
        n_nodes = num_boards if j % 2 == 1 else num_pins
        col = np.where(t[:, j] < 0, n_nodes, t[:, j])
        out.append(np.bincount(col, minlength=n_nodes + 1) / t.shape[0])
    return out


@pytest.mark.parametrize("kw", [{}, {"restart_prob": 0.35}, {"termination_prob": 0.3}, {"weighted": True},
                                {"restart_prob": 0.25, "termination_prob": 0.2, "weighted": True}])
def test_visit_frequencies_match_exact_probabilities(tiny_graph, transitions, zscore, kw):
    n, hops, seed = 60_000, 4, 1
    traces = random_walk(tiny_graph, torch.full((n,), seed), hops, generator=torch.Generator().manual_seed(11), **kw)
    exact = exact_position_distributions(tiny_graph, seed, hops, kw.get("restart_prob", 0.0),
                                         kw.get("termination_prob", 0.0), kw.get("weighted", False),
                                         transitions=transitions)
    emp = empirical_position_distributions(traces, tiny_graph.num_pins, tiny_graph.num_boards)
    for j, (f, p) in enumerate(zip(emp, exact)):
        assert zscore(f, p, n) < 5, f"trace column {j + 1}: {f} vs exact {p}"


@pytest.mark.parametrize("weighted", [False, True])
def test_exclusion_removes_edges_and_keeps_exact_distribution(tiny_graph, transitions, zscore, weighted):
    """Excluded edges are never traversed, and the remaining edges keep exactly their
    (renormalized) probabilities."""
    pins, boards = (t.numpy() for t in tiny_graph.edges())
    # exclude (0, board 0) and (6, board 2): pin 0 must then leave through board 3 only
    ex = np.flatnonzero(((pins == 0) & (boards == 0)) | ((pins == 6) & (boards == 2)))
    mask = np.zeros(tiny_graph.num_edges, dtype=bool)
    mask[ex] = True
    n = 60_000
    traces = random_walk(tiny_graph, torch.full((n,), 0), 4, generator=torch.Generator().manual_seed(5),
                         weighted=weighted, exclude_edges=torch.from_numpy(ex))
    assert (traces[:, 1] == 3).all()
    assert_walk_follows_edges(tiny_graph, traces[:2000], excluded_ids=ex)
    exact = exact_position_distributions(tiny_graph, 0, 4, weighted=weighted, excluded=mask,
                                         transitions=transitions)
    emp = empirical_position_distributions(traces, tiny_graph.num_pins, tiny_graph.num_boards)
    for j, (f, p) in enumerate(zip(emp, exact)):
        assert zscore(f, p, n) < 5, f"trace column {j + 1}"
    # the bool-mask and pair forms exclude the same edges
    sg = SamplingGraph.from_graph(tiny_graph)
    by_pairs = sg.exclusion_of_pairs(torch.tensor([0, 6, 7]), torch.tensor([0, 2, 0]))  # (7, 0) is no edge
    assert torch.equal(by_pairs.edge_ids, torch.from_numpy(ex))
    assert torch.equal(sg.exclusion(torch.from_numpy(mask)).edge_ids, torch.from_numpy(ex))


def test_exclusion_can_isolate_a_seed(tiny_graph):
    pins, _ = tiny_graph.edges()
    ex = (pins == 0).nonzero().flatten()            # every edge of pin 0
    traces = random_walk(tiny_graph, torch.tensor([0, 0, 1]), 3, exclude_edges=ex,
                         generator=torch.Generator().manual_seed(0))
    assert (traces[:2, 1:] == -1).all() and (traces[2] >= 0).all()
    assert not (traces[2, 2::2] == 0).any()        # pin 0 is unreachable now


@given(st.integers(2, 30), st.integers(1, 8), st.integers(1, 120), st.integers(0, 2**31 - 1),
       st.floats(0, 0.9), st.floats(0, 0.9), st.booleans(), st.floats(0, 0.7))
def test_property_walks_stay_on_kept_edges(make_graph, num_pins, num_boards, num_edges, seed, restart, term,
                                           weighted, frac):
    g = make_graph(num_pins, num_boards, num_edges, seed=seed)
    rng = np.random.default_rng(seed)
    ex = np.flatnonzero(rng.random(g.num_edges) < frac)
    traces = random_walk(g, torch.arange(num_pins), 3, restart_prob=restart, termination_prob=term,
                         weighted=weighted, exclude_edges=torch.from_numpy(ex),
                         generator=torch.Generator().manual_seed(seed))
    assert_walk_follows_edges(g, traces, excluded_ids=ex, restart=restart > 0)
    kept_deg = np.bincount(g.edges()[0].numpy()[np.setdiff1d(np.arange(g.num_edges), ex)], minlength=num_pins)
    assert ((traces[:, 1] >= 0).numpy() == (kept_deg > 0)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_devices(medium_graph, device):
    sg = SamplingGraph.from_graph(medium_graph, device)
    gen = torch.Generator(device=device).manual_seed(0)
    traces = random_walk(sg, torch.arange(100, device=device), 3, 0.2, gen)
    assert traces.device.type == device
    assert_walk_follows_edges(medium_graph, traces, restart=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_argument(medium_graph):
    traces = random_walk(medium_graph, torch.arange(100), 3, device="cuda")
    assert traces.is_cuda
    assert_walk_follows_edges(medium_graph, traces)
