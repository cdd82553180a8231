"""Conversions of a ``PinBoardGraph`` to other graph libraries' types.

All four keep the internal ids: pin ``i`` of the store is pin ``i`` in the result. Edge order of
the pin -> board direction is the store's edge-id (pin-major CSR) order, so per-edge arrays such
as ``g.splits.edge_split`` line up with it.

  to_pyg       torch_geometric.data.HeteroData (PyG is a dependency)
  to_scipy     scipy.sparse.csr_array [P, B] or [B, P], sharing the store's arrays
  to_networkx  networkx.Graph, bipartite, for small graphs only
  to_dgl       dgl.heterograph (DGL is optional: imported lazily)
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from graph.csr import expand_indptr

if TYPE_CHECKING:  # pragma: no cover
    from graph.store import PinBoardGraph

PIN_TO_BOARD = ("pin", "saved_to", "board")
BOARD_TO_PIN = ("board", "contains", "pin")


def _rows(indptr: torch.Tensor) -> torch.Tensor:
    """int64 [E]: the row (source node) of every CSR entry."""
    return torch.from_numpy(expand_indptr(indptr.numpy()))


def to_pyg(g: "PinBoardGraph"):
    """``torch_geometric.data.HeteroData`` of the graph.

    Node types ``'pin'`` (``num_nodes`` = P) and ``'board'`` (B). Edge types
    ``('pin', 'saved_to', 'board')`` in edge-id order and ``('board', 'contains', 'pin')`` in
    board-major order, each with ``edge_index`` int64 [2, E], and when the store has them
    ``edge_weight`` float32 [E] and ``edge_time`` int64 [E] (seconds).
    """
    from torch_geometric.data import HeteroData

    data = HeteroData()
    data["pin"].num_nodes = g.num_pins
    data["board"].num_nodes = g.num_boards
    for etype, indptr, indices, weights, times in (
            (PIN_TO_BOARD, g.pin_indptr, g.pin_indices, g.pin_weights, g.pin_timestamps),
            (BOARD_TO_PIN, g.board_indptr, g.board_indices, g.board_weights, g.board_timestamps)):
        store = data[etype]
        store.edge_index = torch.stack([_rows(indptr), indices.long()])
        if weights is not None:
            store.edge_weight = weights
        if times is not None:
            store.edge_time = times
    return data


def to_scipy(g: "PinBoardGraph", direction: str = "pin"):
    """``scipy.sparse.csr_array``: [P, B] rows = pins (``direction='pin'``) or [B, P] (``'board'``).

    Values are the edge weights (float32), or 1.0 when the store has none. The column indices
    and weights are shared with the store (no copy, even when memory-mapped); scipy needs one
    index dtype for indptr and indices, so with int32 indices only the small indptr [N + 1] is
    cast to int32 (when the edge count fits, else the indices are widened to int64).
    """
    import scipy.sparse as sp

    if direction == "pin":
        indptr, indices, weights, shape = g.pin_indptr, g.pin_indices, g.pin_weights, (g.num_pins, g.num_boards)
    elif direction == "board":
        indptr, indices, weights, shape = g.board_indptr, g.board_indices, g.board_weights, (g.num_boards, g.num_pins)
    else:
        raise ValueError(f"direction={direction!r}: expected 'pin' or 'board'")
    indptr, indices = indptr.numpy(), indices.numpy()
    if indices.dtype == np.int32 and g.num_edges <= np.iinfo(np.int32).max:
        indptr = indptr.astype(np.int32)
    else:
        indices = indices.astype(np.int64, copy=False)
    data = np.ones(g.num_edges, np.float32) if weights is None else weights.numpy()
    return sp.csr_array((data, indices, indptr), shape=shape, copy=False)


def to_networkx(g: "PinBoardGraph", max_edges: int = 1_000_000):
    """Bipartite ``networkx.Graph``: nodes ``('pin', i)`` (``bipartite=0``) and ``('board', j)``
    (``bipartite=1``); every edge has ``weight`` (1.0 when the store has none) and, when the
    store has them, ``timestamp``.

    networkx spends hundreds of bytes per edge, so graphs with more than ``max_edges`` edges are
    refused (``ValueError``); use ``to_scipy`` for those.
    """
    import networkx as nx

    if g.num_edges > max_edges:
        raise ValueError(f"to_networkx: the graph has {g.num_edges} edges, more than max_edges={max_edges} "
                         "(networkx needs hundreds of bytes per edge); use g.to_scipy() for large "
                         "graphs, or pass a larger max_edges")
    G = nx.Graph()
    G.add_nodes_from((("pin", i) for i in range(g.num_pins)), bipartite=0)
    G.add_nodes_from((("board", j) for j in range(g.num_boards)), bipartite=1)
    pins, boards = g.edges()
    w = np.ones(g.num_edges) if g.pin_weights is None else g.pin_weights.numpy().astype(np.float64)
    if g.pin_timestamps is None:
        G.add_edges_from((("pin", p), ("board", b), {"weight": x})
                         for p, b, x in zip(pins.tolist(), boards.tolist(), w.tolist()))
    else:
        G.add_edges_from((("pin", p), ("board", b), {"weight": x, "timestamp": t})
                         for p, b, x, t in zip(pins.tolist(), boards.tolist(), w.tolist(),
                                               g.pin_timestamps.tolist()))
    return G


_DGL_HINT = ("to_dgl needs DGL, an optional extra (pip install 'pinclip-toolkit[dgl]'). DGL 2.1 "
             "imports only with torch<=2.2.1, so it lives in a side environment: `make dgl-env`.")


def to_dgl(g: "PinBoardGraph"):
    """``dgl.heterograph`` with edge types ``('pin','saved_to','board')`` and
    ``('board','contains','pin')``; ``edata['weight']`` / ``edata['timestamp']`` when present.

    The id type follows the store's index dtype (int32 or int64). Raises ``ImportError`` with
    installation advice when DGL cannot be imported.
    """
    try:
        import dgl
    except Exception as exc:  # DGL raises various errors when torch is too new
        raise ImportError(f"{_DGL_HINT} (import failed: {type(exc).__name__}: {exc})") from exc
    idtype = torch.int32 if g.pin_indices.dtype == torch.int32 else torch.int64
    hg = dgl.heterograph(
        {PIN_TO_BOARD: (_rows(g.pin_indptr).to(idtype), g.pin_indices.to(idtype)),
         BOARD_TO_PIN: (_rows(g.board_indptr).to(idtype), g.board_indices.to(idtype))},
        num_nodes_dict={"pin": g.num_pins, "board": g.num_boards}, idtype=idtype)
    for etype, w, t in ((PIN_TO_BOARD, g.pin_weights, g.pin_timestamps),
                        (BOARD_TO_PIN, g.board_weights, g.board_timestamps)):
        if w is not None:
            hg.edges[etype].data["weight"] = w
        if t is not None:
            hg.edges[etype].data["timestamp"] = t
    return hg


__all__ = ["to_pyg", "to_scipy", "to_networkx", "to_dgl", "PIN_TO_BOARD", "BOARD_TO_PIN"]
