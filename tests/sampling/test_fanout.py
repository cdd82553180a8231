"""Fanout sampling: valid edges, per-hop bookkeeping, exact draw probabilities, PyG interop."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from graph import PinBoardGraph
from sampling import BOARD_TO_PIN, PIN_TO_BOARD, FanoutSampler, build_sampler, load_sampler_config

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def check_output(g, out, fanouts):
    pins, boards = g.edges()
    nodes = out.node
    for et in (PIN_TO_BOARD, BOARD_TO_PIN):
        src = nodes[et[0]][out.row[et]]
        dst = nodes[et[2]][out.col[et]]
        e = out.edge[et]
        p, b = (src, dst) if et[0] == "pin" else (dst, src)
        assert torch.equal(pins[e.cpu()], p.cpu()) and torch.equal(boards[e.cpu()], b.cpu())
    # per-hop bookkeeping
    for t, counts in out.num_sampled_nodes.items():
        assert sum(counts) == nodes[t].shape[0]
    for et, counts in out.num_sampled_edges.items():
        assert sum(counts) == out.row[et].shape[0]
        assert len(counts) == len(fanouts)
    # fanout respected: each destination node got at most k edges in its hop
    for et in out.row:
        if out.col[et].numel():
            assert int(torch.bincount(out.col[et]).max()) <= max(k if k > 0 else 10**9 for k in fanouts)
    # node ids are distinct beyond the seeds
    for t, ids in nodes.items():
        rest = ids[out.batch_size:] if t == out.seed_type else ids
        assert torch.unique(rest).numel() == rest.numel()


@pytest.mark.parametrize("kw", [{}, {"replace": True}, {"weighted": True}, {"weighted": True, "replace": True}])
def test_edges_and_bookkeeping(medium_graph, kw):
    s = FanoutSampler(medium_graph, [10, 5, 3], **kw)
    seeds = torch.tensor([0, 5, 77, 1500])
    out = s.sample(seeds)
    check_output(medium_graph, out, [10, 5, 3])
    assert torch.equal(out.seeds, seeds) and out.batch_size == 4
    assert out.num_sampled_nodes["pin"][0] == 4 and out.num_sampled_nodes["board"][0] == 0
    assert s.directions == ["pin->board", "board->pin", "pin->board"]
    # hop 1 samples min(deg, 10) boards per seed without replacement
    if not kw.get("replace"):
        deg = medium_graph.pin_degrees()[seeds]
        assert out.num_sampled_edges[BOARD_TO_PIN][0] == int(torch.clamp(deg, max=10).sum())
        key = out.edge[BOARD_TO_PIN]
        assert torch.unique(key).numel() == key.numel()         # no edge twice


def test_board_seeds_and_all_neighbors(medium_graph):
    out = FanoutSampler(medium_graph, [-1], seed_type="board").sample(torch.tensor([3, 4]))
    deg = medium_graph.board_degrees()[[3, 4]]
    assert out.num_sampled_edges[PIN_TO_BOARD] == [int(deg.sum())]
    check_output(medium_graph, out, [-1])


def replicated_boards(reps: int, weights) -> PinBoardGraph:
    """``reps`` copies of one board holding ``len(weights)`` pins with those weights: board r holds
    pins r*d .. r*d + d-1, so one call with every board as a seed gives ``reps`` independent draws."""
    d = len(weights)
    pins = np.arange(reps * d)
    return PinBoardGraph.from_edges(pins, pins // d, reps * d, reps, weights=np.tile(np.asarray(weights, np.float32), reps))


def local_draws(out, d: int) -> np.ndarray:
    """[reps, d] 0/1 (or counts with replacement): which local pins each board drew."""
    pins = out.node["pin"][out.row[PIN_TO_BOARD]].numpy()
    boards = out.node["board"][out.col[PIN_TO_BOARD]].numpy()
    m = np.zeros((out.batch_size, d))
    np.add.at(m, (boards, pins - boards * d), 1)
    return m


def test_uniform_without_replacement_is_uniform():
    """Boards with 20 pins, fanout 5: every pin is drawn with probability 5/20 (5 sigma)."""
    reps, d = 4000, 20
    g = replicated_boards(reps, [1.0] * d)
    out = FanoutSampler(g, [5], seed_type="board", seed=0).sample(torch.arange(reps))
    m = local_draws(out, d)
    assert (m.sum(1) == 5).all() and m.max() == 1
    p = 5 / 20
    assert np.abs(m.mean(0) - p).max() < 5 * np.sqrt(p * (1 - p) / reps)


def test_weighted_draw_probabilities():
    """Boards of 4 pins with weights 1, 2, 3, 4. With replacement: each draw ~ w / 10. Without
    (k = 2): inclusion P(i) = w_i/W + sum_j (w_j/W) (w_i / (W - w_j)) (successive sampling)."""
    w = np.array([1.0, 2.0, 3.0, 4.0])
    reps = 4000
    g = replicated_boards(reps, w)
    out = FanoutSampler(g, [2], seed_type="board", weighted=True, replace=True, seed=1).sample(torch.arange(reps))
    m = local_draws(out, 4)
    assert (m.sum(1) == 2).all()
    n = 2 * reps
    assert np.abs(m.sum(0) / n - w / w.sum()).max() < 5 * np.sqrt(0.25 / n)
    out = FanoutSampler(g, [2], seed_type="board", weighted=True, seed=2).sample(torch.arange(reps))
    m = local_draws(out, 4)
    assert (m.sum(1) == 2).all() and m.max() == 1
    W = w.sum()
    exact = np.array([w[i] / W + sum(w[j] / W * w[i] / (W - w[j]) for j in range(4) if j != i) for i in range(4)])
    assert np.abs(m.mean(0) - exact).max() < 5 * np.sqrt(0.25 / reps)


def successive_inclusion(w: np.ndarray, k: int) -> np.ndarray:
    """Exact inclusion probabilities of successive weighted sampling of ``k`` of ``w`` (every
    ordered draw sequence enumerated)."""
    out = np.zeros(len(w))
    for seq in itertools.permutations(range(len(w)), k):
        p, left = 1.0, w.sum()
        for i in seq:
            p *= w[i] / left
            left -= w[i]
        out[list(seq)] += p
    return out


@pytest.mark.parametrize("k", [2, 4])
def test_weighted_without_replacement_skewed_weights(k):
    """Two light edges among heavy ones: drawing the last of k by rejection alone would take
    ~100 rounds (the old sampler gave up early and under-drew the light edges); the exact
    finish keeps the inclusion probabilities (5 sigma), and a board with a zero-weight edge
    never draws it."""
    w = np.array([0.04, 0.04, 4.84, 4.84, 4.84, 0.0])
    reps = 4000
    g = replicated_boards(reps, w)
    m = local_draws(FanoutSampler(g, [k], seed_type="board", weighted=True, seed=7).sample(torch.arange(reps)), 6)
    assert (m.sum(1) == k).all() and m.max() == 1 and m[:, 5].sum() == 0
    exact = successive_inclusion(w, k)
    sd = np.sqrt(exact * (1 - exact) / reps) + 1e-12
    assert np.abs(m.mean(0) - exact).max() <= 5 * sd.max()
    assert (np.abs(m.mean(0) - exact) <= 5 * sd + 1e-9).all()


def test_weighted_without_replacement_with_exclusion():
    """Excluded edges are never drawn, and the rest keep their successive-sampling inclusion
    probabilities (the exact finish skips excluded edges too)."""
    w = np.array([0.04, 0.04, 4.84, 4.84, 4.84, 1.0])
    reps, d = 3000, 6
    g = replicated_boards(reps, w)
    ex = torch.arange(reps) * d + 2                       # the first heavy pin of every board
    s = FanoutSampler(g, [4], seed_type="board", weighted=True, seed=8)
    m = local_draws(s.sample(torch.arange(reps), exclude_edges=ex), d)
    assert m[:, 2].sum() == 0 and (m.sum(1) == 4).all()
    kept = np.array([0, 1, 3, 4, 5])
    exact = successive_inclusion(w[kept], 4)
    sd = np.sqrt(exact * (1 - exact) / reps) + 1e-12
    assert (np.abs(m[:, kept].mean(0) - exact) <= 5 * sd + 1e-9).all()


@pytest.mark.parametrize("reps", [1000, 3000])   # below / above the row count where Floyd switches layout
def test_floyd_large_fanout_is_uniform(reps):
    """Fanout 10 of 25: every pin with probability 10/25, no pin twice, in both layouts."""
    d, k = 25, 10
    g = replicated_boards(reps, [1.0] * d)
    m = local_draws(FanoutSampler(g, [k], seed_type="board", seed=9).sample(torch.arange(reps)), d)
    assert (m.sum(1) == k).all() and m.max() == 1
    p = k / d
    assert np.abs(m.mean(0) - p).max() < 5 * np.sqrt(p * (1 - p) / reps)


def test_sorting_networks_sort():
    """Every 0/1 input sorted (the 0-1 principle: then every input is), for 1 to 12 inputs."""
    from sampling.fanout import sorting_network

    for n in range(1, 13):
        x = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1          # [2^n, n], every 0/1 vector
        for i, j in sorting_network(n):
            lo, hi = np.minimum(x[:, i], x[:, j]), np.maximum(x[:, i], x[:, j])
            x[:, i], x[:, j] = lo, hi
        assert (np.diff(x, axis=1) >= 0).all(), n


def test_four_hops_no_edge_twice(medium_graph):
    """Without replacement no edge is sampled twice in any edge type, over four hops."""
    out = FanoutSampler(medium_graph, [6, 4, 6, 4], seed=10).sample(torch.arange(0, 400, 7))
    check_output(medium_graph, out, [6, 4, 6, 4])
    for et, e in out.edge.items():
        assert torch.unique(e).numel() == e.numel(), et
    assert len(out.num_sampled_nodes["pin"]) == 5 and out.num_sampled_edges[BOARD_TO_PIN][2] > 0


def test_floyd_subsets_are_uniform():
    """All C(6, 3) = 20 subsets equally likely (5 sigma per subset)."""
    reps = 6000
    g = replicated_boards(reps, [1.0] * 6)
    m = local_draws(FanoutSampler(g, [3], seed_type="board", seed=3).sample(torch.arange(reps)), 6)
    code = (m * (2 ** np.arange(6))).sum(1).astype(int)
    subsets = [sum(2 ** i for i in c) for c in itertools.combinations(range(6), 3)]
    freq = np.array([(code == c).mean() for c in subsets])
    assert freq.sum() == 1.0
    p = 1 / 20
    assert np.abs(freq - p).max() < 5 * np.sqrt(p * (1 - p) / reps)


@pytest.mark.parametrize("kw", [{}, {"weighted": True}, {"replace": True}])
def test_exclusion(medium_graph, kw):
    rng = np.random.default_rng(0)
    ex = torch.from_numpy(np.flatnonzero(rng.random(medium_graph.num_edges) < 0.5))
    out = FanoutSampler(medium_graph, [4, 4], seed=0, **kw).sample(torch.arange(50), exclude_edges=ex)
    check_output(medium_graph, out, [4, 4])
    for et in out.edge:
        assert not torch.isin(out.edge[et], ex).any()
    full = FanoutSampler(medium_graph, [-1]).sample(torch.arange(50), exclude_edges=ex)
    kept = np.setdiff1d(np.flatnonzero(np.isin(medium_graph.edges()[0].numpy(), np.arange(50))), ex.numpy())
    assert sorted(full.edge[BOARD_TO_PIN].tolist()) == kept.tolist()


def test_determinism(medium_graph):
    a = FanoutSampler(medium_graph, [5, 5], seed=4).sample(torch.arange(20))
    b = FanoutSampler(medium_graph, [5, 5], seed=4).sample(torch.arange(20))
    for t in a.node:
        assert torch.equal(a.node[t], b.node[t])


def test_pyg_layers_run_on_the_sample(medium_graph):
    from torch_geometric.nn import HeteroConv, SAGEConv
    from torch_geometric.sampler import HeteroSamplerOutput

    out = build_sampler(load_sampler_config("fanout_2hop"), medium_graph).sample(torch.arange(16))
    feats = {"pin": torch.randn(medium_graph.num_pins, 8), "board": torch.randn(medium_graph.num_boards, 8)}
    data = out.to_hetero_data(feats)
    assert data["pin"].batch_size == 16 and data["pin"].x.shape == (out.node["pin"].numel(), 8)
    assert torch.equal(data[BOARD_TO_PIN].e_id, out.edge[BOARD_TO_PIN])
    torch.manual_seed(0)
    conv1 = HeteroConv({PIN_TO_BOARD: SAGEConv((8, 8), 16), BOARD_TO_PIN: SAGEConv((8, 8), 16)})
    conv2 = HeteroConv({BOARD_TO_PIN: SAGEConv((16, 16), 4), PIN_TO_BOARD: SAGEConv((16, 16), 4)})
    h = conv1(data.x_dict, data.edge_index_dict)
    h = conv2({k: v.relu() for k, v in h.items()}, data.edge_index_dict)
    assert h["pin"][: data["pin"].batch_size].shape == (16, 4)
    assert torch.isfinite(h["pin"]).all()
    assert isinstance(out.to_pyg(), HeteroSamplerOutput)


def test_validation(medium_graph):
    with pytest.raises(ValueError, match="fanouts"):
        FanoutSampler(medium_graph, [10, 0])
    with pytest.raises(ValueError, match="seed_type"):
        FanoutSampler(medium_graph, [10], seed_type="user")


@pytest.mark.parametrize("device", DEVICES)
def test_devices(medium_graph, device):
    out = FanoutSampler(medium_graph, [3, 3], device=device).sample(torch.arange(10))
    assert out.node["pin"].device.type == device
    check_output(medium_graph, out.to("cpu"), [3, 3])


def test_relabeling_bookkeepings_agree():
    """The table (default), the sorted set's numpy path (CPU) and its torch path (other devices)
    assign the same local ids, in order of first appearance, and the table is clean afterwards."""
    from sampling.relabel import DenseNodeMap, SortedNodeSet

    rng = np.random.default_rng(0)
    dense = DenseNodeMap(60, torch.device("cpu"))
    for _ in range(100):
        seeds = torch.from_numpy(rng.integers(0, 50, rng.integers(0, 10)))
        a, b = SortedNodeSet(seeds.clone()), SortedNodeSet(seeds.clone())
        b.numpy = False
        b._sort()
        first = dense.start(seeds.clone())
        assert torch.equal(first, a.add(seeds)[0])
        ids = seeds.tolist()
        for _ in range(3):
            c = torch.from_numpy(rng.integers(0, 60, rng.integers(0, 30)))
            (la, na), (lb, nb), (ld, nd) = a.add(c), b.add(c), dense.add(c)
            assert torch.equal(la, lb) and torch.equal(na, nb) and torch.equal(a.ids, b.ids)
            assert torch.equal(la, ld) and torch.equal(na, nd) and torch.equal(a.ids, dense.ids)
            assert torch.equal(a.ids[la], c)
            for x in c.tolist():                        # first appearance, by brute force
                if x not in ids:
                    ids.append(x)
            assert dense.ids[len(seeds):].tolist() == ids[len(seeds):]
        dense.finish()
        assert (dense.table == torch.iinfo(torch.int32).max).all()


def test_edge_id_table_and_search_agree(medium_graph):
    """Fanout output is the same with the board -> edge-id table and with the binary search."""
    from sampling import SamplingGraph

    a = FanoutSampler(SamplingGraph.from_graph(medium_graph), [4, 3, 2], seed=5).sample(torch.arange(30))
    b = FanoutSampler(SamplingGraph.from_graph(medium_graph), [4, 3, 2], seed=5, edge_id_table=False).sample(torch.arange(30))
    for et in a.edge:
        assert torch.equal(a.edge[et], b.edge[et]) and torch.equal(a.row[et], b.row[et])
    check_output(medium_graph, a, [4, 3, 2])


@pytest.mark.skipif(not __import__("sampling.fanout_kernels", fromlist=["available"]).available(),
                    reason="numba does not import")
@pytest.mark.parametrize("fanouts,seed_type", [([10, 5], "pin"), ([6, 4, 6, 4], "pin"), ([3, -1, 2], "board"),
                                               ([1, 30], "pin")])
def test_compiled_kernels_equal_torch_path(medium_graph, fanouts, seed_type):
    """The numba kernels (uniform hops, relabeling, table reset) give exactly the torch path's
    sample from the same generator state, duplicate seeds included, and leave the table clean."""
    from sampling.fanout_kernels import set_enabled

    n = medium_graph.num_pins if seed_type == "pin" else medium_graph.num_boards
    seeds = torch.cat([torch.arange(0, n, 13), torch.tensor([0, 13, 0])])
    outs = []
    try:
        for on in (True, False):
            set_enabled(on)
            s = FanoutSampler(medium_graph, fanouts, seed_type=seed_type, seed=11)
            outs.append([s.sample(seeds), s.sample(seeds[:7])])
            assert all((m.table == torch.iinfo(torch.int32).max).all() for m in s._maps.values())
    finally:
        set_enabled(True)
    for a, b in zip(*outs):
        for t in a.node:
            assert torch.equal(a.node[t], b.node[t])
        for e in a.edge:
            assert torch.equal(a.edge[e], b.edge[e]) and torch.equal(a.row[e], b.row[e]) and torch.equal(a.col[e], b.col[e])
        assert a.num_sampled_nodes == b.num_sampled_nodes and a.num_sampled_edges == b.num_sampled_edges
        check_output(medium_graph, a, fanouts)


def test_config_edge_id_table_reaches_the_sampler(medium_graph):
    from sampling import SamplingGraph

    for on in (True, False):
        sg = SamplingGraph.from_graph(medium_graph)
        build_sampler(load_sampler_config("fanout_2hop", [f"fanout.edge_id_table={str(on).lower()}"]), sg)
        assert (sg._board_edge_ids is not None) == on
