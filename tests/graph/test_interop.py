"""Conversions to PyG, scipy, networkx and DGL."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from graph import PinBoardGraph
from graph.interop import BOARD_TO_PIN, PIN_TO_BOARD


@pytest.fixture(params=["memory", "mmap"])
def g(request, small_graph, tmp_path) -> PinBoardGraph:
    if request.param == "memory":
        return small_graph
    small_graph.save(tmp_path / "s")
    return PinBoardGraph.open(tmp_path / "s")


def _reference(g: PinBoardGraph) -> sp.csr_array:
    pins, boards = g.edges()
    w = g.pin_weights.numpy()
    return sp.coo_array((w, (pins.numpy(), boards.numpy())), shape=(g.num_pins, g.num_boards)).tocsr()


def test_to_pyg(g):
    data = g.to_pyg()
    assert data["pin"].num_nodes == g.num_pins and data["board"].num_nodes == g.num_boards
    fwd, rev = data[PIN_TO_BOARD], data[BOARD_TO_PIN]
    assert fwd.edge_index.dtype == torch.int64 and fwd.edge_index.shape == (2, g.num_edges)
    assert rev.edge_index.shape == (2, g.num_edges)
    pins, boards = g.edges()
    assert torch.equal(fwd.edge_index[0], pins) and torch.equal(fwd.edge_index[1], boards)
    # the reverse relation holds exactly the same (pin, board) pairs with the same weights
    f = {(p, b): w for p, b, w in zip(*fwd.edge_index.tolist(), fwd.edge_weight.tolist())}
    r = {(p, b): w for b, p, w in zip(*rev.edge_index.tolist(), rev.edge_weight.tolist())}
    assert f == r
    assert torch.equal(fwd.edge_time, g.pin_timestamps)
    data.validate(raise_on_error=True)


def test_pyg_layers_run(g):
    from torch_geometric.nn import HeteroConv, SAGEConv

    data = g.to_pyg()
    torch.manual_seed(0)
    x = {"pin": torch.randn(g.num_pins, 8), "board": torch.randn(g.num_boards, 8)}
    conv = HeteroConv({PIN_TO_BOARD: SAGEConv((8, 8), 16), BOARD_TO_PIN: SAGEConv((8, 8), 16)}, aggr="sum")
    out = conv(x, data.edge_index_dict)
    assert out["pin"].shape == (g.num_pins, 16) and out["board"].shape == (g.num_boards, 16)
    assert torch.isfinite(out["pin"]).all()
    # a board with no pins receives only its root term; one with pins also the mean of its pins
    sage = SAGEConv((8, 8), 4)
    y = sage((x["pin"], x["board"]), data[PIN_TO_BOARD].edge_index)
    j = int(torch.argmax(g.board_degrees()))
    mean = x["pin"][g.pins_of(j).long()].mean(0)
    expected = sage.lin_l(mean) + sage.lin_r(x["board"][j])
    assert torch.allclose(y[j], expected, atol=1e-5)


def test_to_scipy_matches_reference_and_shares_memory(g):
    a = g.to_scipy()
    assert isinstance(a, sp.csr_array) and a.shape == (g.num_pins, g.num_boards)
    ref = _reference(g)
    assert (a != ref).nnz == 0
    assert np.shares_memory(a.indices, g.pin_indices.numpy())
    assert np.shares_memory(a.data, g.pin_weights.numpy())
    b = g.to_scipy("board")
    assert b.shape == (g.num_boards, g.num_pins)
    assert (b != ref.T.tocsr()).nnz == 0
    assert np.shares_memory(b.indices, g.board_indices.numpy())
    with pytest.raises(ValueError, match="direction="):
        g.to_scipy("sideways")


def test_to_scipy_without_weights_and_int64_indices():
    g = PinBoardGraph.from_edges([0, 0, 1], [1, 1, 2])
    a = g.to_scipy()
    assert a.dtype == np.float32 and a.toarray().tolist() == [[0, 1, 0], [0, 0, 1]]
    # a store with int64 indices (ids beyond int32) is shared as is: build one by hand
    csr = g.csr_numpy()
    from graph.csr import BipartiteCSR
    wide = PinBoardGraph(BipartiteCSR(csr.num_pins, csr.num_boards, csr.pin_indptr,
                                      csr.pin_indices.astype(np.int64), csr.board_indptr,
                                      csr.board_indices.astype(np.int64)))
    w = wide.to_scipy()
    assert w.indices.dtype == np.int64 and np.shares_memory(w.indices, wide.pin_indices.numpy())
    assert np.shares_memory(w.indptr, wide.pin_indptr.numpy())


def test_to_networkx(g):
    G = g.to_networkx()
    assert G.number_of_nodes() == g.num_pins + g.num_boards and G.number_of_edges() == g.num_edges
    assert G.nodes[("pin", 0)]["bipartite"] == 0 and G.nodes[("board", 0)]["bipartite"] == 1
    import networkx as nx
    assert nx.is_bipartite(G)
    pins, boards = g.edges()
    for k in (0, g.num_edges // 2, g.num_edges - 1):
        e = G.edges[("pin", int(pins[k])), ("board", int(boards[k]))]
        assert e["weight"] == pytest.approx(float(g.pin_weights[k]))
        assert e["timestamp"] == int(g.pin_timestamps[k])
    adj = nx.bipartite.biadjacency_matrix(G, [("pin", i) for i in range(g.num_pins)],
                                          [("board", j) for j in range(g.num_boards)], weight="weight")
    assert abs(adj - _reference(g)).max() < 1e-6


def test_to_networkx_refuses_big_graphs(small_graph):
    with pytest.raises(ValueError, match=r"more than max_edges=10 .*use g\.to_scipy\(\)"):
        small_graph.to_networkx(max_edges=10)
    assert small_graph.to_networkx(max_edges=small_graph.num_edges).number_of_edges() == small_graph.num_edges


def test_to_dgl_without_dgl_says_how_to_get_it(small_graph, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_dgl(name, *args, **kwargs):
        if name == "dgl" or name.startswith("dgl."):
            raise ImportError("No module named 'dgl'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dgl)
    with pytest.raises(ImportError, match=r"pinclip-toolkit\[dgl\].*torch<=2\.2\.1"):
        small_graph.to_dgl()


@pytest.mark.dgl
def test_to_dgl(g):
    dgl = pytest.importorskip("dgl")
    hg = g.to_dgl()
    assert hg.num_nodes("pin") == g.num_pins and hg.num_nodes("board") == g.num_boards
    assert hg.num_edges(PIN_TO_BOARD) == g.num_edges and hg.num_edges(BOARD_TO_PIN) == g.num_edges
    src, dst = hg.edges(etype=PIN_TO_BOARD)
    pins, boards = g.edges()
    assert torch.equal(src.long(), pins) and torch.equal(dst.long(), boards)
    assert torch.equal(hg.edges[PIN_TO_BOARD].data["weight"], g.pin_weights)
    assert hg.idtype == torch.int32
    assert isinstance(hg, dgl.DGLGraph)
