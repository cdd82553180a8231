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
    among those not drawn yet; by rejection for ``2 k + 4`` rounds, then, for the few nodes not
    done, exactly by Gumbel-perturbed keys over their edges); a node with fewer than k
    positive-weight edges keeps all of them. The same distribution as DGL's weighted
    ``NeighborSampler`` (its tree sampler draws successively, too).
Excluded edges (``exclude_edges``) are never drawn: d counts only kept edges.

On CPU the uniform hops without replacement or exclusion, and the relabeling, run as compiled
loops (``sampling.fanout_kernels``, numba) that give exactly the samples of the torch code here;
everything else (and CUDA) runs the vectorized torch code.

The result, ``FanoutOutput``, holds ids only (features are fetched by the loader), like PyG's
``HeteroSamplerOutput``; ``to_hetero_data()`` builds the ``torch_geometric.data.HeteroData``
PyG's GNN layers run on.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from sampling.adjacency import (Adjacency, DirectionExclusion, GeneratorStateMixin, GraphLike,
                                as_sampling_graph, expand_segments)
from sampling import fanout_kernels
from sampling.relabel import DenseNodeMap, NodeIds, new_node_ids
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


def _kept_rows(adj: Adjacency, nodes: torch.Tensor, excl: DirectionExclusion | None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per node (int64 [m]): CSR row start ``s``, excluded positions before it ``js`` (zeros
    without exclusion) and kept degree ``d``, each int64 [m]."""
    s = adj.indptr.index_select(0, nodes)
    e = adj.indptr.index_select(0, nodes + 1)
    if excl is None:
        return s, torch.zeros_like(s), e - s
    js = torch.searchsorted(excl.pos, s)
    return s, js, (e - s) - (torch.searchsorted(excl.pos, e) - js)


def _all_kept_positions(s: torch.Tensor, js: torch.Tensor, d: torch.Tensor, excl: DirectionExclusion | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """(positions int64 [sum d], owner int64 [sum d]): every kept edge of the rows of ``_kept_rows``."""
    rank, owner = expand_segments(torch.zeros_like(s), d)
    return _kept_rank_to_position(s.index_select(0, owner), js.index_select(0, owner), rank, excl), owner


def _kept_rank_to_position(s: torch.Tensor, js: torch.Tensor, rank: torch.Tensor,
                           excl: DirectionExclusion | None) -> torch.Tensor:
    """CSR position of the ``rank``-th kept edge of rows starting at ``s`` (broadcasts [m, k])."""
    if excl is None:
        return s + rank
    t = (s - js) + rank
    return t + torch.searchsorted(excl.z, t.reshape(-1), right=True).reshape(t.shape)


@functools.lru_cache(maxsize=None)
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Batcher's odd-even merge sort comparators ``(i, j)``, ``i < j``, for ``n`` inputs.

    Built for the next power of two; comparators reaching past ``n`` are dropped (the missing
    inputs act as +inf at the end, which those comparators would never move).
    """
    size = 1
    while size < n:
        size *= 2
    out = []
    p = 1
    while p < size:                      # the iterative form of the network (Wikipedia's)
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k - 1, size - j - k - 1) + 1):
                    a, b = i + j, i + j + k
                    if a // (2 * p) == b // (2 * p) and b < n:
                        out.append((a, b))
            k //= 2
        p *= 2
    return tuple(out)


def floyd_ranks(d: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """A uniform ``k``-subset of ``[0, d[i])`` for every row (Floyd's algorithm, vectorized).

    d: int64 [n], every ``d[i] >= k``. Returns int64 [n, k], each row ascending. Draws exactly
    ``k * n`` float64 uniforms (one [k, n] tensor). Step ``i`` draws ``t`` uniform in ``[0, j]``
    (``j = d - k + i``) and takes ``j`` instead when ``t`` is already chosen. Mostly it keeps one
    tensor per column and sorts the rows with a sorting network (elementwise min / max over
    columns: for [9000, 5], a tenth of ``torch.sort(dim=1)``'s time on CPU).
    """
    n = d.shape[0]
    u = torch.rand((k, n), generator=generator, dtype=torch.float64, device=d.device)
    if k > _COLUMNS_UP_TO and n < _COLUMNS_FROM_ROWS:  # few rows, many columns: fewer kernels
        chosen = torch.empty((n, k), dtype=torch.int64, device=d.device)
        for i in range(k):
            j = d - (k - i)
            t = (u[i] * (j + 1)).long()
            if i:
                t = torch.where((chosen[:, :i] == t[:, None]).any(dim=1), j, t)
            chosen[:, i] = t
        return torch.sort(chosen, dim=1).values
    cols: list[torch.Tensor] = []
    for i in range(k):
        j = d - (k - i)
        t = (u[i] * (j + 1)).long()
        if cols:
            taken = cols[0] == t
            for c in cols[1:]:
                taken |= c == t
            t = torch.where(taken, j, t)
        cols.append(t)
    for i, j in sorting_network(k):
        cols[i], cols[j] = torch.minimum(cols[i], cols[j]), torch.maximum(cols[i], cols[j])
    return torch.stack(cols, dim=1)


# Column tensors and a sorting network beat one [n, i] comparison per step and a row sort for
# k <= 8, and for any k from a few thousand rows on (CPU, measured: [20000, 10] 4.7 ms vs 8.0 ms,
# [600, 10] 0.38 ms vs 0.30 ms).
_COLUMNS_UP_TO = 8
_COLUMNS_FROM_ROWS = 2048


def _sample_hop(adj: Adjacency, nodes: torch.Tensor, k: int, *, weighted: bool, replace: bool,
                excl: DirectionExclusion | None, generator: torch.Generator | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to ``k`` edges out of each of ``nodes`` (int64 [m]); ``k = -1``: all usable edges.

    Returns (positions int64 [M]: CSR positions in ``adj``, owner int64 [M]: index into
    ``nodes``), grouped by owner. Gathers and masks use ``index_select`` / ``masked_select``: on
    CPU torch's advanced indexing costs 3-4x as much for the same work.
    """
    device = adj.device
    m = nodes.shape[0]
    if excl is not None and excl.size == 0:
        excl = None
    if k != -1 and not weighted and not replace and excl is None and fanout_kernels.runs_on(device):
        indptr, nodes_np = adj.indptr.numpy(), nodes.numpy()
        nb = fanout_kernels.count_over(indptr, nodes_np, k)
        u = torch.rand((k, nb), generator=generator, dtype=torch.float64, device=device)
        pos, owner = fanout_kernels.uniform_hop(indptr, nodes_np, k, u.numpy())
        return torch.from_numpy(pos), torch.from_numpy(owner)
    s, js, d = _kept_rows(adj, nodes, excl)
    if k == -1:
        pos, owner = _all_kept_positions(s, js, d, excl)
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
    big = (d > k).nonzero().flatten()
    if big.numel() and not weighted:
        rank.index_copy_(0, big, floyd_ranks(d.index_select(0, big), k, generator))
        valid.index_fill_(0, big, True)
        pos = _kept_rank_to_position(s[:, None], js[:, None], rank, excl)
    else:
        pos = _kept_rank_to_position(s[:, None], js[:, None], rank, excl)
        if weighted and adj.num_edges:
            valid &= adj.weights.index_select(0, pos.reshape(-1).clamp(max=adj.num_edges - 1)).reshape(m, k) > 0
        if big.numel():
            chosen = _successive_weighted(adj, nodes.index_select(0, big), k, excl, generator)
            pos.index_copy_(0, big, chosen.clamp(max=max(adj.num_edges - 1, 0)))
            valid.index_copy_(0, big, chosen < _NONE)
    counts = valid.sum(dim=1)
    owner = torch.repeat_interleave(torch.arange(m, device=device), counts)
    if owner.shape[0] == m * k:        # every row full (common past hop 1): no mask to apply
        return pos.reshape(-1), owner
    return pos.masked_select(valid), owner


_NONE = 2**62  # "no edge" in a row of chosen positions (sorts after every real position)


def _successive_weighted(adj: Adjacency, nodes: torch.Tensor, k: int, excl: DirectionExclusion | None,
                         generator: torch.Generator | None) -> torch.Tensor:
    """Up to ``k`` distinct edges of each of ``nodes`` (int64 [n]) by successive sampling: each
    next edge in proportion to weight among the kept, positive-weight edges not drawn yet.

    First by rejection (one weighted draw per unfinished node per round, a repeat is thrown
    away), for ``2 k + 4`` rounds: most nodes finish in about ``k`` rounds. A node whose
    undrawn edges hold little weight would need many rounds, so the rest of every unfinished
    node's draws come from ``_finish_by_gumbel_keys`` (exact, O(degree)). Either way every draw
    follows the conditional distribution given the earlier ones, so the result is exact.
    Returns int64 [n, k] ascending CSR positions, ``_NONE`` where a node has fewer than ``k``.
    """
    nb = nodes.shape[0]
    device = nodes.device
    chosen = torch.full((nb, k), -1, dtype=torch.int64, device=device)
    filled = torch.zeros(nb, dtype=torch.int64, device=device)
    for _ in range(2 * k + 4):
        todo = (filled < k).nonzero().flatten()
        if todo.numel() == 0:
            break
        u = torch.rand(todo.shape[0], generator=generator, dtype=torch.float64, device=device)
        p, ok = draw_positions(adj, nodes.index_select(0, todo), u, weighted=True, exclude=excl)
        fresh = ok & ~(chosen.index_select(0, todo) == p[:, None]).any(dim=1)
        rows = todo[fresh]
        chosen[rows, filled[rows]] = p[fresh]
        filled[rows] += 1
    rest = (filled < k).nonzero().flatten()
    if rest.numel():
        chosen[rest] = _finish_by_gumbel_keys(adj, nodes.index_select(0, rest), chosen.index_select(0, rest),
                                              filled.index_select(0, rest), excl, generator)
    chosen = torch.where(chosen >= 0, chosen, torch.full_like(chosen, _NONE))
    return torch.sort(chosen, dim=1).values


def _finish_by_gumbel_keys(adj: Adjacency, nodes: torch.Tensor, chosen: torch.Tensor, filled: torch.Tensor,
                           excl: DirectionExclusion | None, generator: torch.Generator | None) -> torch.Tensor:
    """The remaining ``k - filled[i]`` successive weighted draws of each node, exactly.

    nodes int64 [n]; chosen int64 [n, k] (the first ``filled[i]`` entries drawn, the rest -1).
    Every kept edge not drawn yet gets the key ``log w - log(-log u)`` (u uniform: a Gumbel
    perturbation); the largest keys are a successive weighted sample of them (the Gumbel-top-k
    property). Costs O(degree) per node, which is why only the stragglers come here.
    Returns chosen with the new draws filled in (-1 where a node ran out of positive weight).
    """
    device = nodes.device
    k = chosen.shape[1]
    s, js, d = _kept_rows(adj, nodes, excl)
    pos, owner = _all_kept_positions(s, js, d, excl)
    u = torch.rand(pos.shape[0], generator=generator, dtype=torch.float64, device=device)
    key = adj.weights.index_select(0, pos).double().log() - (-u.clamp_min(2.0**-60).log()).log()
    key = torch.where((chosen.index_select(0, owner) == pos[:, None]).any(dim=1),
                      torch.full_like(key, -torch.inf), key)
    # Edges ordered by (node, key descending): key order first, then a stable sort by node.
    order = torch.argsort(key, descending=True, stable=True)
    order = order.index_select(0, torch.argsort(owner.index_select(0, order), stable=True))
    o_owner = owner.index_select(0, order)
    within = torch.arange(order.shape[0], device=device) - (torch.cumsum(d, 0) - d).index_select(0, o_owner)
    col = filled.index_select(0, o_owner) + within
    pick = (col < k) & (key.index_select(0, order) > -torch.inf)
    out = chosen.clone()
    out[o_owner[pick], col[pick]] = pos.index_select(0, order)[pick]
    return out


class FanoutSampler(GeneratorStateMixin):
    """k-hop fanout sampling over the Pin-Board graph (see the module docstring).

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph``.
      fanouts: neighbors per node at each hop, e.g. ``[10, 5]`` (hop 1 from the seeds' type).
        ``-1`` takes every neighbor. Hops alternate direction: pin -> board, board -> pin, ...
      seed_type: ``'pin'`` (default) or ``'board'``.
      weighted: draw in proportion to edge weights. replace: draw with replacement.
      seed: seeds the sampler's generator. device: where to sample (CSR copied there once).
      edge_id_table: build the graph's board -> edge-id table now (``SamplingGraph.
        board_edge_id_table``: 4 bytes per edge, shared with DataLoader workers forked later) so
        that the board -> pin hops find pin-major edge ids with one gather; False: a binary search
        per sampled edge instead (about 3x slower fanout, no extra memory).
    """

    def __init__(self, g: GraphLike, fanouts: Sequence[int] = (10, 5), seed_type: str = "pin", *,
                 weighted: bool = False, replace: bool = False, seed: int = 0,
                 device: torch.device | str | None = None, edge_id_table: bool = True) -> None:
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
        self._maps: dict[str, NodeIds] | None = None   # relabeling tables, made on the first call
        if edge_id_table and "board->pin" in self.directions:
            self.graph.board_edge_id_table()

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
        sets = self._node_maps()
        try:
            return self._sample(seeds, excl, gen, sets)
        finally:
            for ns in sets.values():
                ns.finish()

    def _node_maps(self) -> dict[str, NodeIds]:
        """The relabeling tables of this call: the sampler's own (kept across calls), or fresh
        ones when a call is already using them (a sampler shared between threads)."""
        sg = self.graph
        maps = self._maps
        if maps is None or any(m.busy for m in maps.values() if isinstance(m, DenseNodeMap)):
            maps = {"pin": new_node_ids(sg.num_pins, sg.device), "board": new_node_ids(sg.num_boards, sg.device)}
            if self._maps is None:
                self._maps = maps
        return maps

    def _sample(self, seeds: torch.Tensor, excl: Any, gen: torch.Generator,
                sets: dict[str, NodeIds]) -> FanoutOutput:
        sg = self.graph
        device = sg.device
        num_nodes = {self.seed_type: [int(seeds.shape[0])], _OTHER[self.seed_type]: [0]}
        etypes = {"pin": BOARD_TO_PIN, "board": PIN_TO_BOARD}  # frontier type -> message edge type
        rows: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        cols: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        eids: dict[EdgeType, list[torch.Tensor]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        num_edges: dict[EdgeType, list[int]] = {PIN_TO_BOARD: [], BOARD_TO_PIN: []}
        sets[_OTHER[self.seed_type]].start(torch.zeros(0, dtype=torch.int64, device=device))
        # The frontier: the nodes whose neighbors the next hop samples, and their local ids
        # (duplicate seeds are sampled once, under the local id of their first occurrence).
        frontier_type = self.seed_type
        frontier_local: torch.Tensor | None = torch.unique(sets[self.seed_type].start(seeds.clone()))
        frontier_start = 0
        nodes = seeds.index_select(0, frontier_local)
        for k in self.fanouts:
            adj = sg.pins if frontier_type == "pin" else sg.boards
            dex = None if excl is None else (excl.pins if frontier_type == "pin" else excl.boards)
            other = _OTHER[frontier_type]
            n_before = len(sets[other])
            et = etypes[frontier_type]
            pos, owner = _sample_hop(adj, nodes, k, weighted=self.weighted, replace=self.replace,
                                     excl=dex, generator=gen)
            # hop 1: the seeds' first-occurrence local ids; later hops: a contiguous range
            owner = frontier_local.index_select(0, owner) if frontier_local is not None else owner + frontier_start
            local, new = sets[other].add(adj.indices.index_select(0, pos).long())
            edge_ids = pos if frontier_type == "pin" else sg.edge_ids_of_board_positions(pos)
            rows[et].append(local)
            cols[et].append(owner)
            eids[et].append(edge_ids)
            for t in (frontier_type, other):
                num_nodes[t].append(int(new.shape[0]) if t == other else 0)
            for e in num_edges:
                num_edges[e].append(int(local.shape[0]) if e == et else 0)
            frontier_type = other
            frontier_local, frontier_start = None, n_before
            nodes = new
        cat = lambda xs: torch.cat(xs) if xs else torch.zeros(0, dtype=torch.int64, device=device)  # noqa: E731
        row = {e: cat(v) for e, v in rows.items()}
        edge = {e: cat(v) for e, v in eids.items()}
        weights = {}
        if sg.has_weights:
            weights = {e: sg.pins.weights.index_select(0, ids) for e, ids in edge.items()}
        return FanoutOutput(
            node={t: s.ids for t, s in sets.items()}, row=row, col={e: cat(v) for e, v in cols.items()},
            edge=edge, num_sampled_nodes=num_nodes, num_sampled_edges=num_edges,
            seed_type=self.seed_type, batch_size=int(seeds.shape[0]), edge_weight=weights)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_maps"] = None          # per-process scratch tables: each worker makes its own
        return state

    __call__ = sample
