"""``SamplingGraph``: the CSR tensors the samplers walk on, on one device, plus edge exclusion.

Samplers never touch the store's numpy arrays directly: they take a ``SamplingGraph``, built
once from a ``PinBoardGraph`` (``SamplingGraph.from_graph(g, device)``). On CPU it *shares* the
store's memory (memory-mapped pages when the store was opened from disk: no copy, so DataLoader
workers forked from the process share them); on another device the four CSR tensors are copied
there once.

Conventions (P pins, B boards, E edges):
  * an edge's id is its position in the pin-major CSR (``pins.indices``), as in the store;
  * ``pins``   : ``Adjacency`` pin -> boards (indptr int64 [P + 1], indices int32|int64 [E]);
  * ``boards`` : ``Adjacency`` board -> pins (indptr int64 [B + 1], indices int32|int64 [E]);
  * within every CSR row, neighbor ids are ascending (the store guarantees it), which the
    vectorized binary searches here rely on.

Edge exclusion (leakage control) comes in two forms:
  * static: ``SamplingGraph.without_edges(edge_ids)`` builds a new CSR without those edges
    (once, on the device; use it for the held-out and cold-start edges, or save
    ``g.train_graph()`` as its own store so workers share it memory-mapped);
  * per call: ``EdgeExclusion`` (``sg.exclusion(edge_ids)`` or ``sg.exclusion_of_pairs(pins,
    boards)``), a small sorted set of edges that the samplers skip *exactly* (a neighbor is drawn
    uniformly, or by weight, among the remaining edges of the node) without rebuilding anything:
    the target pairs of a training batch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import torch

from graph.devices import check_device

if TYPE_CHECKING:  # pragma: no cover
    from graph.store import PinBoardGraph

__all__ = ["GeneratorStateMixin", "Adjacency", "SamplingGraph", "EdgeExclusion", "DirectionExclusion", "as_sampling_graph",
           "segment_search", "expand_segments", "GraphLike"]


# ---------------------------------------------------------------------------------- helpers
class GeneratorStateMixin:
    """Pickle a sampler's ``self.generator`` as (device, state) (older torch cannot pickle it)."""

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        gen = state.pop("generator")
        # bytes, not the state tensor: a tensor made here dies before a spawned worker could map
        # its shared-memory storage.
        state["_generator_state"] = (str(gen.device), gen.get_state().numpy().tobytes())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        device, gstate = state.pop("_generator_state")
        self.__dict__.update(state)
        self.generator = torch.Generator(device=device)
        self.generator.set_state(torch.frombuffer(bytearray(gstate), dtype=torch.uint8))


def expand_segments(starts: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate the index ranges ``[starts[i], starts[i] + lengths[i])``.

    starts, lengths: int64 [n] (lengths >= 0). Returns (positions int64 [sum(lengths)],
    owner int64 [sum(lengths)]: the ``i`` each position comes from), in order of ``i``.
    """
    lengths = lengths.long()
    n = lengths.shape[0]
    owner = torch.repeat_interleave(torch.arange(n, device=lengths.device), lengths)
    if owner.numel() == 0:
        return owner.clone(), owner
    first = torch.cumsum(lengths, 0) - lengths                      # [n] output offset of segment i
    within = torch.arange(owner.shape[0], device=lengths.device) - first[owner]
    return starts.long()[owner] + within, owner


def segment_search(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
                   values: torch.Tensor) -> torch.Tensor:
    """Vectorized binary search of ``values[i]`` in the ascending CSR row ``rows[i]``.

    indptr int64 [N + 1]; indices int [E] (ascending within each row); rows, values int [n].
    Returns int64 [n]: the position in ``indices`` (a CSR position, i.e. an edge position of that
    direction) where ``indices[pos] == values[i]`` inside row ``rows[i]``, or -1 when absent.
    Lower-bound search, one vectorized round per halving; searches that have converged leave
    the working set, so rows of a few neighbors cost a few rounds even when some rows are huge.
    On CPU the same loop runs in numpy on views of the tensors (its per-call overhead is a
    fraction of torch's, and this loop is many small calls).
    """
    if indices.device.type == "cpu":
        return torch.from_numpy(_segment_search_numpy(indptr.numpy(), indices.numpy(),
                                                      rows.long().numpy(), values.long().numpy()))
    return _segment_search_torch(indptr, indices, rows, values)


def _segment_search_numpy(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray,
                          values: np.ndarray) -> np.ndarray:
    lo = indptr[rows]
    end = indptr[rows + 1]
    if rows.shape[0] == 0 or indices.shape[0] == 0:
        return np.full(rows.shape[0], -1, dtype=np.int64)
    act = np.flatnonzero(lo < end)
    a_lo, a_hi, a_val = lo[act], end[act], values[act]
    while act.size:
        mid = (a_lo + a_hi) >> 1
        right = indices[mid] < a_val
        a_lo = np.where(right, mid + 1, a_lo)
        a_hi = np.where(right, a_hi, mid)
        going = a_lo < a_hi
        if not going.all():
            lo[act] = a_lo                      # converged entries keep their final lower bound
            keep = np.flatnonzero(going)
            act, a_lo, a_hi, a_val = act[keep], a_lo[keep], a_hi[keep], a_val[keep]
    found = lo < end
    found &= indices[np.where(found, lo, 0)] == values
    return np.where(found, lo, -1).astype(np.int64, copy=False)


def _segment_search_torch(indptr: torch.Tensor, indices: torch.Tensor, rows: torch.Tensor,
                          values: torch.Tensor) -> torch.Tensor:
    """``segment_search`` in torch (any device)."""
    rows = rows.long()
    values = values.long()
    lo = indptr[rows]
    end = indptr[rows + 1]
    n = rows.shape[0]
    if n == 0 or indices.shape[0] == 0:
        return torch.full_like(lo, -1)
    act = (lo < end).nonzero().flatten()
    a_lo, a_hi, a_val = lo[act], end[act], values[act]
    while act.numel():
        mid = torch.div(a_lo + a_hi, 2, rounding_mode="floor")
        right = indices.index_select(0, mid).long() < a_val
        a_lo = torch.where(right, mid + 1, a_lo)
        a_hi = torch.where(right, a_hi, mid)
        going = a_lo < a_hi
        if not bool(going.all()):
            lo[act] = a_lo                      # converged entries keep their final lower bound
            keep = going.nonzero().flatten()
            act, a_lo, a_hi, a_val = act[keep], a_lo[keep], a_hi[keep], a_val[keep]
    found = lo < end
    found &= indices.index_select(0, torch.where(found, lo, torch.zeros_like(lo))).long() == values
    return torch.where(found, lo, torch.full_like(lo, -1))


# ---------------------------------------------------------------------------------- adjacency
@dataclass
class Adjacency:
    """One direction of the bipartite graph as CSR tensors on one device.

    indptr int64 [N + 1]; indices int32|int64 [E] (neighbor ids, ascending per row);
    weights float32 [E] or None. ``cumulative_weights()`` (float64 [E + 1], built lazily on first
    weighted draw) turns weighted sampling into one global ``searchsorted``.
    """

    indptr: torch.Tensor
    indices: torch.Tensor
    weights: torch.Tensor | None = None
    _cum: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_nodes(self) -> int:
        return int(self.indptr.shape[0]) - 1

    @property
    def num_edges(self) -> int:
        return int(self.indices.shape[0])

    @property
    def device(self) -> torch.device:
        return self.indices.device

    def degrees(self, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """int64 degrees of ``nodes`` (int [n]) or of every node ([N])."""
        if nodes is None:
            return self.indptr[1:] - self.indptr[:-1]
        nodes = nodes.long()
        return self.indptr[nodes + 1] - self.indptr[nodes]

    def cumulative_weights(self) -> torch.Tensor:
        """float64 [E + 1]: ``C[0] = 0``, ``C[i + 1] = C[i] + weights[i]`` (raises without weights)."""
        if self.weights is None:
            raise ValueError("weighted sampling needs edge weights, and this graph has none "
                             "(build it with PinBoardGraph.from_edges(..., weights=...))")
        if self._cum is None:
            cum = torch.zeros(self.num_edges + 1, dtype=torch.float64, device=self.device)
            torch.cumsum(self.weights.double(), 0, out=cum[1:])
            self._cum = cum
        return self._cum

    def to(self, device: torch.device | str) -> "Adjacency":
        return Adjacency(self.indptr.to(device), self.indices.to(device),
                         None if self.weights is None else self.weights.to(device))


@dataclass
class DirectionExclusion:
    """A sorted set of excluded CSR positions of one direction, ready for exact skipping.

    pos int64 [X] sorted (CSR positions of the excluded edges in this direction);
    z   int64 [X]: ``pos - arange(X)`` (number of kept positions before each excluded one);
    For weighted draws (lazily): cx float64 [X + 1] cumulative excluded weight, and
    y float64 [X] = ``C[pos] - cx[:-1]`` (kept weight before each excluded position).
    """

    pos: torch.Tensor
    z: torch.Tensor
    _cx: torch.Tensor | None = field(default=None, repr=False)
    _y: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_positions(cls, pos: torch.Tensor) -> "DirectionExclusion":
        pos = torch.unique(pos.long())  # sorted, deduplicated
        return cls(pos, pos - torch.arange(pos.shape[0], device=pos.device))

    @property
    def size(self) -> int:
        return int(self.pos.shape[0])

    def weighted_tables(self, adj: Adjacency) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cx is None:
            cum = adj.cumulative_weights()
            w = adj.weights[self.pos].double()
            cx = torch.zeros(self.size + 1, dtype=torch.float64, device=self.pos.device)
            torch.cumsum(w, 0, out=cx[1:])
            self._cx = cx
            self._y = cum[self.pos] - cx[:-1]
        return self._cx, self._y


@dataclass
class EdgeExclusion:
    """Edges the samplers must not traverse during one call (per-call leakage control).

    edge_ids int64 [X] sorted: pin-major edge ids; ``pins`` / ``boards``: the same edges as CSR
    positions of each direction (``DirectionExclusion``). Build it with
    ``SamplingGraph.exclusion`` / ``exclusion_of_pairs``.
    """

    edge_ids: torch.Tensor
    pins: DirectionExclusion
    boards: DirectionExclusion

    @property
    def size(self) -> int:
        return self.pins.size


# ---------------------------------------------------------------------------------- the graph
class SamplingGraph:
    """Both CSR directions of a Pin-Board graph on one device (see the module docstring).

    Attributes: ``pins`` (pin -> board ``Adjacency``), ``boards`` (board -> pin), ``num_pins``,
    ``num_boards``, ``num_edges``, ``device``, ``has_weights``.
    """

    def __init__(self, pins: Adjacency, boards: Adjacency, num_pins: int, num_boards: int,
                 source_path: str | None = None, source_weights: bool = True) -> None:
        if pins.num_edges != boards.num_edges:
            raise ValueError(f"pin CSR has {pins.num_edges} edges but board CSR has {boards.num_edges}")
        self.pins = pins
        self.boards = boards
        self.num_pins = int(num_pins)
        self.num_boards = int(num_boards)
        self.num_edges = pins.num_edges
        # Set only when the tensors are exactly the (memory-mapped, CPU) arrays of a saved store:
        # pickling then sends the path and the receiver re-opens the store memory-mapped instead of
        # copying the arrays (DataLoader workers started with 'spawn' or 'forkserver').
        self._source_path = source_path
        self._source_weights = bool(source_weights)
        self._board_edge_ids: torch.Tensor | None = None   # built on demand: board_edge_id_table()

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_graph(cls, g: "PinBoardGraph", device: torch.device | str | None = None,
                   weights: bool = True) -> "SamplingGraph":
        """The CSR tensors of ``g`` on ``device`` (default: where they are, i.e. CPU, shared).

        ``weights``: keep the edge weights (when ``g`` has them) for weighted sampling.
        """
        device = check_device(device, "device") if device is not None else g.pin_indptr.device
        same = device == g.pin_indptr.device

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            if t is None:
                return None
            return t if same else t.to(device)

        pw = g.pin_weights if weights else None
        bw = g.board_weights if weights else None
        pins = Adjacency(mv(g.pin_indptr), mv(g.pin_indices), mv(pw))
        boards = Adjacency(mv(g.board_indptr), mv(g.board_indices), mv(bw))
        path = None
        if same and device.type == "cpu" and getattr(g, "path", None) is not None:
            path = os.fspath(g.path)
        return cls(pins, boards, g.num_pins, g.num_boards, source_path=path, source_weights=weights)

    def to(self, device: torch.device | str) -> "SamplingGraph":
        device = check_device(device, "device")
        if device == self.device:
            return self
        return SamplingGraph(self.pins.to(device), self.boards.to(device), self.num_pins, self.num_boards)

    @property
    def device(self) -> torch.device:
        return self.pins.indices.device

    @property
    def has_weights(self) -> bool:
        return self.pins.weights is not None

    def __repr__(self) -> str:
        return (f"SamplingGraph(num_pins={self.num_pins}, num_boards={self.num_boards}, "
                f"num_edges={self.num_edges}, device={self.device}, weights={self.has_weights})")

    # ---------------------------------------------------------------- pickling (workers)
    def __getstate__(self) -> dict[str, Any]:
        if self._source_path is not None:
            return {"source_path": self._source_path, "weights": self._source_weights}
        return {"pins": self.pins, "boards": self.boards, "num_pins": self.num_pins,
                "num_boards": self.num_boards}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "source_path" in state:
            # Imported here: graph.store needs pyarrow, which ``import sampling`` does not load.
            from graph.store import PinBoardGraph
            g = PinBoardGraph.open(state["source_path"], verify="none")
            other = SamplingGraph.from_graph(g, weights=state["weights"])
            self.__dict__.update(other.__dict__)
            return
        self.__init__(state["pins"], state["boards"], state["num_pins"], state["num_boards"])

    # ---------------------------------------------------------------- edge ids
    def edge_pins(self, edge_ids: torch.Tensor) -> torch.Tensor:
        """int64 [n]: the pin of each (pin-major) edge id."""
        return torch.searchsorted(self.pins.indptr, edge_ids.long(), right=True) - 1

    def edge_ids_of_pairs(self, pins: torch.Tensor, boards: torch.Tensor) -> torch.Tensor:
        """int64 [n]: the edge id of each (pin, board) pair, -1 where the graph has no such edge."""
        pins = torch.as_tensor(pins, device=self.device).long()
        boards = torch.as_tensor(boards, device=self.device).long()
        if pins.shape != boards.shape:
            raise ValueError(f"pins {tuple(pins.shape)} and boards {tuple(boards.shape)} differ in shape")
        bad = (pins < 0) | (pins >= self.num_pins) | (boards < 0) | (boards >= self.num_boards)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"pair {i}: (pin {int(pins[i])}, board {int(boards[i])}) is out of range "
                             f"for {self.num_pins} pins and {self.num_boards} boards")
        return segment_search(self.pins.indptr, self.pins.indices, pins, boards)

    def board_positions(self, edge_ids: torch.Tensor) -> torch.Tensor:
        """int64 [n]: the board-major CSR position of each (pin-major) edge id."""
        edge_ids = edge_ids.long()
        pins = self.edge_pins(edge_ids)
        boards = self.pins.indices[edge_ids]
        return segment_search(self.boards.indptr, self.boards.indices, boards, pins)

    def board_edge_id_table(self) -> torch.Tensor:
        """int32 [E] (int64 from 2^31 edges): the pin-major edge id of every board-major CSR
        position, built on the first call and kept (4 bytes per edge; 10M edges: 40 MB, about 1 s
        on one CPU thread).

        A stable sort of the pin-major board ids gives it: within a board, the board-major CSR
        lists pins ascending, which is their pin-major order. With the table,
        ``edge_ids_of_board_positions`` is one gather instead of a binary search per position.
        """
        if self._board_edge_ids is None:
            order = torch.sort(self.pins.indices, stable=True).indices
            self._board_edge_ids = order.int() if self.num_edges < 2**31 else order
        return self._board_edge_ids

    def edge_ids_of_board_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """int64 [n]: the pin-major edge id of each board-major CSR position (one gather when
        ``board_edge_id_table()`` has been built, else a binary search in each pin's row)."""
        positions = positions.long()
        if self._board_edge_ids is not None:
            return self._board_edge_ids.index_select(0, positions).long()
        boards = torch.searchsorted(self.boards.indptr, positions, right=True) - 1
        pins = self.boards.indices[positions]
        return segment_search(self.pins.indptr, self.pins.indices, pins, boards)

    def _check_edge_ids(self, edge_ids: Any) -> torch.Tensor:
        ids = torch.as_tensor(edge_ids, device=self.device)
        if ids.dtype == torch.bool:
            if ids.shape != (self.num_edges,):
                raise ValueError(f"edge mask: expected bool [{self.num_edges}], got {list(ids.shape)}")
            return ids.nonzero().flatten()
        if ids.dim() != 1 or ids.is_floating_point():
            raise ValueError(f"edge ids: expected a 1-D integer tensor (or a bool [E] mask), got "
                             f"{ids.dtype}{list(ids.shape)}")
        ids = ids.long()
        bad = (ids < 0) | (ids >= self.num_edges)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"edge ids: id {int(ids[i])} at position {i} is out of range [0, {self.num_edges})")
        return ids

    # ---------------------------------------------------------------- exclusion
    def exclusion(self, edge_ids: Any) -> EdgeExclusion:
        """Per-call exclusion of ``edge_ids`` (int [X] pin-major ids, or a bool [E] mask)."""
        ids = torch.unique(self._check_edge_ids(edge_ids))
        return EdgeExclusion(ids, DirectionExclusion.from_positions(ids),
                             DirectionExclusion.from_positions(self.board_positions(ids)))

    def exclusion_of_pairs(self, pins: Any, boards: Any) -> EdgeExclusion:
        """Per-call exclusion of the (pin, board) pairs that are edges (other pairs are ignored)."""
        ids = self.edge_ids_of_pairs(pins, boards)
        return self.exclusion(ids[ids >= 0])

    def without_edges(self, edge_ids: Any) -> "SamplingGraph":
        """A new ``SamplingGraph`` (same nodes, same device) without the given edges.

        ``edge_ids``: int [X] pin-major edge ids or a bool [E] mask of edges to *remove*. The
        result is an in-memory copy (O(E)); build it once, before DataLoader workers fork.
        Edge ids of the result are positions in *its* pin-major CSR.
        """
        ids = torch.unique(self._check_edge_ids(edge_ids))
        board_pos = torch.sort(self.board_positions(ids)).values
        pins = _drop_positions(self.pins, ids, self.edge_pins(ids))
        boards = _drop_positions(self.boards, board_pos,
                                 torch.searchsorted(self.boards.indptr, board_pos, right=True) - 1)
        return SamplingGraph(pins, boards, self.num_pins, self.num_boards)


def _drop_positions(adj: Adjacency, pos: torch.Tensor, rows: torch.Tensor) -> Adjacency:
    keep = torch.ones(adj.num_edges, dtype=torch.bool, device=adj.device)
    keep[pos] = False
    removed = torch.bincount(rows, minlength=adj.num_nodes)
    indptr = adj.indptr.clone()
    indptr[1:] -= torch.cumsum(removed, 0)
    return Adjacency(indptr, adj.indices[keep], None if adj.weights is None else adj.weights[keep])


# What the samplers take as a graph: a ``graph.store.PinBoardGraph`` (its CSR is copied into a
# ``SamplingGraph``) or a ``SamplingGraph`` (used as it is, or moved to the sampler's device).
GraphLike = Union["PinBoardGraph", SamplingGraph]


def as_sampling_graph(g: GraphLike, device: torch.device | str | None = None) -> SamplingGraph:
    """``SamplingGraph`` from a ``PinBoardGraph`` (or a ``SamplingGraph``, moved to ``device``)."""
    if isinstance(g, SamplingGraph):
        return g if device is None else g.to(device)
    if hasattr(g, "pin_indptr") and hasattr(g, "board_indices"):
        return SamplingGraph.from_graph(g, device)
    raise TypeError(f"expected a PinBoardGraph or SamplingGraph, got {type(g).__name__}")
