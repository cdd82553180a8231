"""``FanoutSampler``: k-hop neighbor sampling over both edge directions, PyG-style output.

Hops alternate between the two directions, starting from the seeds' node type: with pin seeds
and ``fanouts=[10, 5]``, hop 1 samples up to 10 boards of every seed pin (pin -> board) and hop 2
up to 5 pins of every board that hop 1 added (board -> pin). As in PyG's ``NeighborSampler``
(``disjoint=False``) each node's neighbors are sampled once, in the hop after it first appears.

Draws per node (``k`` = the hop's fanout, ``d`` = the node's usable degree):
  * uniform, without replacement (default): all edges when d <= k, else a uniform k-subset
    (Floyd's algorithm, vectorized over nodes: k draws per node);
  * uniform, with replacement: k independent draws;
  * weighted (edge weights), with replacement: k independent draws in proportion to weight;
  * weighted, without replacement: successive sampling (each next edge in proportion to weight
    among those not drawn yet, by rejection: one draw per unfinished node per round, at most
    ``8 k + 16`` rounds, so a node whose positive-weight edges run out keeps fewer; nodes with
    d <= k keep all their positive-weight edges).
Excluded edges (``exclude_edges``) are never drawn: d counts only kept edges.

The result, ``FanoutOutput``, holds ids only (features are fetched by the loader), like PyG's
``HeteroSamplerOutput``; ``to_hetero_data()`` builds the ``torch_geometric.data.HeteroData``
PyG's GNN layers run on.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch

from sampling.adjacency import (Adjacency, DirectionExclusion, GeneratorStateMixin, GraphLike,
                                as_sampling_graph, expand_segments)
from sampling.steps import draw_positions
from sampling.threads import with_sampler_threads
from sampling.walks import as_exclusion, prepare_seeds

__all__ = ["FanoutSampler", "FanoutOutput", "PIN_TO_BOARD", "BOARD_TO_PIN", "EdgeType"]

EdgeType = tuple[str, str, str]
# The edge types of graph.interop.to_pyg: messages flow src -> dst.
PIN_TO_BOARD: EdgeType = ("pin", "saved_to", "board")
BOARD_TO_PIN: EdgeType = ("board", "contains", "pin")
_OTHER = {"pin": "board", "board": "pin"}


@dataclass
class FanoutOutput:
    """The sampled subgraph, ids only (shapes: N_t nodes of type t, M_e edges of type e).

    node[t]              int64 [N_t]  global ids of the sampled nodes of type ``t`` ('pin' or
                                      'board'); the seeds come first (``node[seed_type][:batch_size]``)
    row[e], col[e]       int64 [M_e]  local indices (into ``node[src]`` / ``node[dst]``) of each
                                      sampled edge, in the message direction: ``e = (src, rel, dst)``,
                                      where ``dst`` is the node whose neighbors were sampled
    edge[e]              int64 [M_e]  edge ids (positions in the pin-major CSR) of those edges
    num_sampled_nodes[t] list[int]    nodes of type ``t`` added per hop (index 0 = the seeds)
    num_sampled_edges[e] list[int]    edges of type ``e`` sampled per hop (index 0 = hop 1)
    seed_type, batch_size             the seeds' node type and count
    edge_weight[e]       float32 [M_e] the sampled edges' weights when the graph has weights
    """

    node: dict[str, torch.Tensor]
    row: dict[EdgeType, torch.Tensor]
    col: dict[EdgeType, torch.Tensor]
    edge: dict[EdgeType, torch.Tensor]
    num_sampled_nodes: dict[str, list[int]]
    num_sampled_edges: dict[EdgeType, list[int]]
    seed_type: str
    batch_size: int
    edge_weight: dict[EdgeType, torch.Tensor] = field(default_factory=dict)

    @property
    def seeds(self) -> torch.Tensor:
        return self.node[self.seed_type][: self.batch_size]

    def to(self, device: torch.device | str) -> "FanoutOutput":
        mv = lambda d: {k: v.to(device) for k, v in d.items()}  # noqa: E731
        return FanoutOutput(mv(self.node), mv(self.row), mv(self.col), mv(self.edge),
                            dict(self.num_sampled_nodes), dict(self.num_sampled_edges),
                            self.seed_type, self.batch_size, mv(self.edge_weight))

    def to_hetero_data(self, features: dict[str, torch.Tensor] | None = None):
        """``torch_geometric.data.HeteroData`` of the sampled subgraph.

        Per node type: ``n_id`` (global ids), ``num_nodes``, ``x`` = ``features[t][n_id]`` when
        ``features`` has type ``t``; the seed type also gets ``batch_size`` and ``input_id``.
        Per edge type: ``edge_index`` [2, M] (local, src -> dst), ``e_id`` (pin-major edge ids),
        ``edge_weight`` when sampled with a weighted graph; ``num_sampled_nodes`` /
        ``num_sampled_edges`` as attributes of the data object (as PyG's loaders set them).
        """
        from torch_geometric.data import HeteroData  # optional dependency: imported only when asked for

        data = HeteroData()
        for t, ids in self.node.items():
            data[t].n_id = ids
            data[t].num_nodes = int(ids.shape[0])
            if features is not None and t in features:
                data[t].x = features[t][ids.to(features[t].device)]
        data[self.seed_type].batch_size = self.batch_size
        data[self.seed_type].input_id = torch.arange(self.batch_size, device=self.seeds.device)
        for e in self.row:
            data[e].edge_index = torch.stack([self.row[e], self.col[e]])
            data[e].e_id = self.edge[e]
            if e in self.edge_weight:
                data[e].edge_weight = self.edge_weight[e]
        data.num_sampled_nodes = dict(self.num_sampled_nodes)
        data.num_sampled_edges = dict(self.num_sampled_edges)
        return data

    def to_pyg(self):
        """The same content as PyG's ``torch_geometric.sampler.HeteroSamplerOutput``."""
        from torch_geometric.sampler import HeteroSamplerOutput  # optional dependency, as above

        return HeteroSamplerOutput(node=dict(self.node), row=dict(self.row), col=dict(self.col),
                                   edge=dict(self.edge), batch=None,
                                   num_sampled_nodes=dict(self.num_sampled_nodes),
                                   num_sampled_edges=dict(self.num_sampled_edges))


class _NodeSet:
    """Global -> local ids of one node type, in order of first appearance.

    On CPU the bookkeeping is numpy on packed int64 keys ``id << 32 | local`` (one SIMD sort
    where torch would need several sorts and argsorts); elsewhere torch sorts.
    """

    _SHIFT = 32

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.numpy = ids.device.type == "cpu"
        if self.numpy:
            a = ids.numpy()
            if a.size and int(a.max()) >= 2**31:
                self.numpy = False
            else:
                self._keys = np.sort((a << self._SHIFT) | np.arange(a.size, dtype=np.int64))
        if not self.numpy:
            self._sort()

    def _sort(self) -> None:
        self.sorted_ids, self.sorted_local = torch.sort(self.ids, stable=True)

    def add(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local ids of ``cand`` (int64 [n]), appending the unseen ones. Returns (local int64 [n],
        new global ids int64 [a])."""
        if self.numpy:
            local, new = self._add_numpy(cand.numpy())
            return torch.from_numpy(local), torch.from_numpy(new)
        return self._add_torch(cand)

    def _add_numpy(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sh = self._SHIFT
        keys = self._keys
        n_old = self.ids.shape[0]
        local = np.empty(c.shape[0], dtype=np.int64)
        if keys.size:
            pos = np.searchsorted(keys, c << sh).clip(max=keys.size - 1)
            hit = keys[pos]
            found = (hit >> sh) == c
            local[found] = hit[found] & ((1 << sh) - 1)
        else:
            found = np.zeros(c.shape[0], dtype=bool)
        miss = np.flatnonzero(~found)
        if miss.size == 0:
            return local, np.zeros(0, dtype=np.int64)
        m = c[miss]
        k = m.size
        ks = np.sort(m * k + np.arange(k, dtype=np.int64))      # (id, position) pairs, sorted
        ids_sorted, pos_sorted = ks // k, ks % k
        group_start = np.empty(k, dtype=bool)
        group_start[0] = True
        np.not_equal(ids_sorted[1:], ids_sorted[:-1], out=group_start[1:])
        first = pos_sorted[group_start]                          # first position of each new id
        is_first = np.zeros(k, dtype=bool)
        is_first[first] = True
        rank = np.cumsum(is_first) - 1                           # order of first appearance
        group = np.cumsum(group_start) - 1
        local_m = np.empty(k, dtype=np.int64)
        local_m[pos_sorted] = n_old + rank[first[group]]
        local[miss] = local_m
        new = m[is_first]
        if new.size and int(new.max()) >= 2**31:  # pragma: no cover - ids beyond 2^31: torch path
            raise OverflowError("node ids beyond 2^31 need the torch path")
        self.ids = torch.cat([self.ids, torch.from_numpy(new)])
        self._keys = np.sort(np.concatenate([keys, (new << sh) | np.arange(n_old, n_old + new.size, dtype=np.int64)]))
        return local, new

    def _add_torch(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_old = self.ids.shape[0]
        local = torch.empty_like(cand)
        if n_old:
            pos = torch.searchsorted(self.sorted_ids, cand).clamp(max=n_old - 1)
            found = self.sorted_ids[pos] == cand
            local[found] = self.sorted_local[pos[found]]
        else:
            found = torch.zeros_like(cand, dtype=torch.bool)
        missing = (~found).nonzero().flatten()
        if missing.numel() == 0:
            return local, cand[:0]
        c = cand[missing]
        uniq, inv = torch.unique(c, return_inverse=True)
        first = torch.full((uniq.shape[0],), c.shape[0], dtype=torch.int64, device=c.device)
        first.scatter_reduce_(0, inv, torch.arange(c.shape[0], device=c.device), reduce="amin")
        order = torch.argsort(first)                     # new ids in order of first appearance
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.shape[0], device=c.device)
        local[missing] = n_old + rank[inv]
        new = uniq[order]
        self.ids = torch.cat([self.ids, new])
        self._sort()
        return local, new


def _kept_rank_to_position(s: torch.Tensor, js: torch.Tensor, rank: torch.Tensor,
                           excl: DirectionExclusion | None) -> torch.Tensor:
    """CSR position of the ``rank``-th kept edge of rows starting at ``s`` (broadcasts [m, k])."""
    if excl is None:
        return s + rank
    t = (s - js) + rank
    return t + torch.searchsorted(excl.z, t.reshape(-1), right=True).reshape(t.shape)


def _sample_hop(adj: Adjacency, nodes: torch.Tensor, k: int, *, weighted: bool, replace: bool,
                excl: DirectionExclusion | None, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``k`` edges out of each of ``nodes`` (int64 [m]); ``k = -1``: all usable edges.

    Returns (positions int64 [M]: CSR positions in ``adj``, owner int64 [M]: index into
    ``nodes``), grouped by owner.
    """
    device = adj.device
    m = nodes.shape[0]
    if excl is not None and excl.size == 0:
        excl = None
    s = adj.indptr[nodes]
    e = adj.indptr[nodes + 1]
    if excl is not None:
        js = torch.searchsorted(excl.pos, s)
        d = (e - s) - (torch.searchsorted(excl.pos, e) - js)
    else:
        js = torch.zeros_like(s)
        d = e - s
    if k == -1:
        rank, owner = expand_segments(torch.zeros_like(s), d)
        pos = _kept_rank_to_position(s[owner], js[owner], rank, excl)
        if weighted:
            keep = adj.weights[pos] > 0
            pos, owner = pos[keep], owner[keep]
        return pos, owner
    if replace:
        u = torch.rand((m, k), generator=generator, dtype=torch.float64, device=device)
        pos, ok = draw_positions(adj, nodes.repeat_interleave(k), u.reshape(-1), weighted=weighted,
                                 exclude=excl)
        owner = torch.arange(m, device=device).repeat_interleave(k)
        return pos[ok], owner[ok]

    cols = torch.arange(k, device=device)
    # Rows with at most k usable edges take all of them (ranks 0 .. d-1).
    valid = cols[None, :] < d[:, None]
    rank = torch.minimum(cols[None, :], (d - 1).clamp_min(0)[:, None])
    pos = _kept_rank_to_position(s[:, None], js[:, None], rank, excl)
    big = (d > k).nonzero().flatten()
    if weighted:
        if adj.num_edges:
            valid &= adj.weights[pos.clamp(max=adj.num_edges - 1)] > 0
    if big.numel() and not weighted:
        db = d[big]
        u = torch.rand((k, big.shape[0]), generator=generator, dtype=torch.float64, device=device)
        chosen = torch.empty((big.shape[0], k), dtype=torch.int64, device=device)
        for i in range(k):                                  # Floyd: a uniform k-subset of [0, d)
            j = db - k + i
            t = (u[i] * (j + 1)).long()
            if i:
                t = torch.where((chosen[:, :i] == t[:, None]).any(dim=1), j, t)
            chosen[:, i] = t
        chosen = torch.sort(chosen, dim=1).values
        pos[big] = _kept_rank_to_position(s[big][:, None], js[big][:, None], chosen, excl)
        valid[big] = True
    elif big.numel():
        nb = big.shape[0]
        chosen = torch.full((nb, k), -1, dtype=torch.int64, device=device)
        filled = torch.zeros(nb, dtype=torch.int64, device=device)
        bnodes = nodes[big]
        for _ in range(8 * k + 16):                         # successive sampling by rejection
            todo = (filled < k).nonzero().flatten()
            if todo.numel() == 0:
                break
            u = torch.rand(todo.shape[0], generator=generator, dtype=torch.float64, device=device)
            p, ok = draw_positions(adj, bnodes[todo], u, weighted=True, exclude=excl)
            fresh = ok & ~(chosen[todo] == p[:, None]).any(dim=1)
            rows = todo[fresh]
            chosen[rows, filled[rows]] = p[fresh]
            filled[rows] += 1
        chosen = torch.where(chosen >= 0, chosen, torch.full_like(chosen, 2**62))
        chosen = torch.sort(chosen, dim=1).values
        pos[big] = chosen.clamp(max=max(adj.num_edges - 1, 0))
        valid[big] = chosen < 2**62
    owner = torch.arange(m, device=device)[:, None].expand(m, k)
    return pos[valid], owner[valid]


class FanoutSampler(GeneratorStateMixin):
    """k-hop fanout sampling over the Pin-Board graph (see the module docstring).

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph``.
      fanouts: neighbors per node at each hop, e.g. ``[10, 5]`` (hop 1 from the seeds' type).
        ``-1`` takes every neighbor. Hops alternate direction: pin -> board, board -> pin, ...
      seed_type: ``'pin'`` (default) or ``'board'``.
      weighted: draw in proportion to edge weights. replace: draw with replacement.
      seed: seeds the sampler's generator. device: where to sample (CSR copied there once).
    """

    def __init__(self, g: GraphLike, fanouts: Sequence[int] = (10, 5), seed_type: str = "pin", *,
                 weighted: bool = False, replace: bool = False, seed: int = 0,
                 device: torch.device | str | None = None) -> None:
        if seed_type not in _OTHER:
            raise ValueError(f"seed_type={seed_type!r}: expected 'pin' or 'board'")
        fanouts = [int(k) for k in fanouts]
        for i, k in enumerate(fanouts):
            if k < -1 or k == 0:
                raise ValueError(f"fanouts[{i}]={k} must be >= 1 (or -1 for all neighbors)")
        self.graph = as_sampling_graph(g, device)
        if weighted and not self.graph.has_weights:
            raise ValueError("weighted=True needs edge weights, and this graph has none")
        self.fanouts = fanouts
        self.seed_type = seed_type
        self.weighted = bool(weighted)
        self.replace = bool(replace)
        self.generator = torch.Generator(device=self.graph.device)
        self.generator.manual_seed(int(seed))

    @property
    def directions(self) -> list[str]:
        """The traversal of each hop, e.g. ``['pin->board', 'board->pin']``."""
        out, t = [], self.seed_type
        for _ in self.fanouts:
            out.append(f"{t}->{_OTHER[t]}")
            t = _OTHER[t]
        return out

    @with_sampler_threads
    def sample(self, seeds: Any, *, generator: torch.Generator | None = None,
               exclude_edges: Any = None) -> FanoutOutput:
        """Sample the k-hop subgraph around ``seeds`` (int [S] ids of ``seed_type``).

        exclude_edges: edges never sampled in this call (pin-major ids, bool [E] mask or an
        ``EdgeExclusion``), e.g. the target edges of link prediction.
        """
        sg = self.graph
        device = sg.device
        gen = self.generator if generator is None else generator
        n_seed_nodes = sg.num_pins if self.seed_type == "pin" else sg.num_boards
        seeds = prepare_seeds(seeds, n_seed_nodes, device)
        excl = as_exclusion(sg, exclude_edges)
        sets = {self.seed_type: _NodeSet(seeds.clone()),
                _OTHER[self.seed_type]: _NodeSet(torch.zeros(0, dtype=torch.int64, device=device))}
        num_nodes = {self.seed_type: [int(seeds.shape[0])], _OTHER[self.seed_type]: [0]}
        etypes = {"pin": BOARD_TO_PIN, "board": PIN_TO_BOARD}  # frontier type -> message edge type
        rows: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        cols: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        eids: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        num_edges: dict[EdgeType, list[int]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        # The frontier: local ids of the nodes whose neighbors the next hop samples (duplicate
        # seeds are sampled once, under the local id of their first occurrence).
        frontier_type = self.seed_type
        frontier_local = torch.unique(sets[self.seed_type].add(seeds)[0])
        for k in self.fanouts:
            adj = sg.pins if frontier_type == "pin" else sg.boards
            dex = None if excl is None else (excl.pins if frontier_type == "pin" else excl.boards)
            nodes = sets[frontier_type].ids[frontier_local]
            pos, owner = _sample_hop(adj, nodes, k, weighted=self.weighted, replace=self.replace,
                                     excl=dex, generator=gen)
            owner = frontier_local[owner]
            nbr = adj.indices[pos].long()
            other = _OTHER[frontier_type]
            local, new = sets[other].add(nbr)
            et = etypes[frontier_type]
            rows[et].append(local)
            cols[et].append(owner)
            eids[et].append(pos if frontier_type == "pin" else sg.edge_ids_of_board_positions(pos))
            for t in (frontier_type, other):
                num_nodes[t].append(int(new.shape[0]) if t == other else 0)
            for e in num_edges:
                num_edges[e].append(int(pos.shape[0]) if e == et else 0)
            n_before = sets[other].ids.shape[0] - new.shape[0]
            frontier_type = other
            frontier_local = torch.arange(n_before, sets[other].ids.shape[0], device=device)
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64, device=device)  # noqa: E731
        row = {e: cat(v) for e, v in rows.items()}
        edge = {e: cat(v) for e, v in eids.items()}
        weights = {}
        if sg.has_weights:
            weights = {e: sg.pins.weights[ids] for e, ids in edge.items()}
        return FanoutOutput(
            node={t: s.ids for t, s in sets.items()}, row=row, col={e: cat(v) for e, v in cols.items()},
            edge=edge, num_sampled_nodes=num_nodes, num_sampled_edges=num_edges,
            seed_type=self.seed_type, batch_size=int(seeds.shape[0]), edge_weight=weights)

    __call__ = sample
