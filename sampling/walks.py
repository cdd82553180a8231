"""Batched random walks: the general metapath walk, then its pin -> board -> pin specialization.

``metapath_random_walk`` is the general algorithm (DGL's ``random_walk`` over a metapath): any
sequence of CSR adjacencies, a per-hop termination and restart probability, dead ends handled
at every hop. ``random_walk`` is the bipartite specialization the samplers use; given the same
generator state it returns exactly the same traces as the general walk on
``[pins, boards] * num_hops`` (a test checks it), but skips work the bipartite structure makes
unnecessary: on a pin-board graph a walk can only be stuck at its seed (every later node was
entered through an edge, so it has one), so dead ends are checked once.

Random numbers (one float64 uniform per walker per draw, from an explicit ``torch.Generator`` on
the graph's device), in this order at each hop ``i``:
  1. termination draw, when ``termination_prob[i] > 0``: the walk stops *before* hop ``i``
     with that probability (DGL's ``restart_prob`` semantics, which PinSage uses);
  2. restart draw, when ``restart_prob[i] > 0``: with that probability the walk jumps back to
     its seed before taking hop ``i`` (Pixie); the jump is not recorded in the trace;
  3. the neighbor draw of hop ``i`` (``sampling.steps.draw_positions``).
Draws are made for every walker, stopped ones included, so the stream does not depend on
which walks stopped.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from sampling.adjacency import (Adjacency, DirectionExclusion, EdgeExclusion, GraphLike, SamplingGraph,
                                as_sampling_graph)
from sampling.steps import draw_positions, uniform
from sampling.threads import with_sampler_threads

__all__ = ["metapath_random_walk", "random_walk", "RandomWalkSampler", "pin_positions", "prepare_seeds",
           "as_exclusion", "bipartite_walk"]


def _per_hop(value: float | Sequence[float] | torch.Tensor | None, hops: int, name: str) -> list[float]:
    if value is None:
        return [0.0] * hops
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (int, float)):
        value = [float(value)] * hops
    value = [float(v) for v in value]
    if len(value) != hops:
        raise ValueError(f"{name}: {len(value)} values for {hops} hops")
    for i, v in enumerate(value):
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{name}[{i}]={v} must be in [0, 1]")
    return value


def prepare_seeds(seeds: Any, num_nodes: int, device: torch.device, what: str = "seeds") -> torch.Tensor:
    """``seeds`` (a tensor, array or sequence of node ids) as int64 [S] on ``device``; ValueError
    (naming ``what``) for anything but a 1-D integer input with every id in [0, num_nodes)."""
    seeds = torch.as_tensor(seeds, device=device)
    if seeds.dim() != 1 or seeds.is_floating_point() or seeds.dtype == torch.bool:
        raise ValueError(f"{what}: expected a 1-D integer tensor of node ids, got {seeds.dtype}{list(seeds.shape)}")
    seeds = seeds.long()
    if seeds.numel():
        lo, hi = int(seeds.min()), int(seeds.max())
        if lo < 0 or hi >= num_nodes:
            bad = lo if lo < 0 else hi
            i = int((seeds == bad).nonzero()[0, 0])
            raise ValueError(f"{what}: id {bad} at position {i} is out of range [0, {num_nodes})")
    return seeds


@with_sampler_threads
def metapath_random_walk(adjacencies: Sequence[Adjacency], seeds: torch.Tensor, *,
                         termination_prob: float | Sequence[float] | None = None,
                         restart_prob: float | Sequence[float] | None = None,
                         weighted: bool = False,
                         exclusions: Sequence[DirectionExclusion | None] | None = None,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """General random walk along a metapath of CSR adjacencies (the reference algorithm).

    adjacencies: L ``Adjacency`` objects; hop ``i`` goes from a node of ``adjacencies[i]``'s
      source type to one of its neighbors, which must be a node of ``adjacencies[i + 1]``'s source
      type. seeds: int [n] node ids of the first source type, on the adjacencies' device.
    termination_prob, restart_prob: float or L floats (see the module docstring). A restart at hop
      ``i`` jumps to the seed, so ``adjacencies[i]`` must start at the seeds' node type.
    weighted: draw neighbors in proportion to edge weights. exclusions: L ``DirectionExclusion``
      (or None) of edges that hop ``i`` must not traverse.

    Returns int64 [n, L + 1]: the seed then one node per hop; -1 from the hop at which the walk
    stopped (terminated, or reached a node without a usable edge) onwards.
    """
    hops = len(adjacencies)
    term = _per_hop(termination_prob, hops, "termination_prob")
    restart = _per_hop(restart_prob, hops, "restart_prob")
    exclusions = list(exclusions) if exclusions is not None else [None] * hops
    if len(exclusions) != hops:
        raise ValueError(f"exclusions: {len(exclusions)} entries for {hops} hops")
    device = adjacencies[0].device if hops else seeds.device
    seeds = seeds.to(device).long()
    n = seeds.shape[0]
    trace = torch.full((n, hops + 1), -1, dtype=torch.int64, device=device)
    trace[:, 0] = seeds
    cur = seeds
    alive = torch.ones(n, dtype=torch.bool, device=device)
    for i, adj in enumerate(adjacencies):
        if term[i] > 0:
            alive &= uniform(n, generator, device) >= term[i]
        if restart[i] > 0:
            jump = uniform(n, generator, device) < restart[i]
            cur = torch.where(jump, seeds, cur)
        safe = torch.where(alive, cur, torch.zeros_like(cur))
        pos, ok = draw_positions(adj, safe, uniform(n, generator, device), weighted=weighted,
                                 exclude=exclusions[i])
        alive &= ok
        nxt = adj.indices.index_select(0, pos).long()
        cur = torch.where(alive, nxt, torch.full_like(nxt, -1))
        trace[:, i + 1] = cur
    return trace


@with_sampler_threads
def random_walk(g: GraphLike, seeds: Any, num_hops: int = 4, restart_prob: float = 0.0,
                generator: torch.Generator | None = None, *, termination_prob: float = 0.0,
                weighted: bool = False, exclude_edges: Any = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Batched pin -> board -> pin random walks (one walk per seed).

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph``; the walk runs where its CSR tensors live
        (or on ``device``, where the CSR is copied: pass a ``SamplingGraph`` to reuse a copy).
      seeds: int [S] pin ids (a tensor, array or sequence); moved to the graph's device.
      num_hops: pin -> board -> pin traversals (each is two steps).
      restart_prob: Pixie restart. Before each traversal but the first (at trace positions
        2, 4, ...), with this probability the walk jumps back to its seed and takes its next
        board among the seed's boards; the jump is not recorded.
      generator: ``torch.Generator`` on the graph's device (None: torch's default generator).
      termination_prob: PinSage termination. Before each traversal but the first, the walk stops
        with this probability (it is then -1 from that board position on).
      weighted: draw neighbors in proportion to edge weights (the graph must have them).
      exclude_edges: edges the walk must not traverse: pin-major edge ids (int [X]), a bool [E]
        mask, or an ``EdgeExclusion`` (``SamplingGraph.exclusion_of_pairs(pins, boards)``).

    Returns LongTensor [S, 2 * num_hops + 1]: pin, board, pin, board, ..., pin (trace[:, 0] = the
    seeds); -1 once a walk stops (seeds without boards stop at once).
    """
    sg = as_sampling_graph(g, device)
    if num_hops < 0:
        raise ValueError(f"num_hops={num_hops} must be >= 0")
    for name, p in (("restart_prob", restart_prob), ("termination_prob", termination_prob)):
        if not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"{name}={p} must be in [0, 1]")
    seeds = prepare_seeds(seeds, sg.num_pins, sg.device)
    excl = as_exclusion(sg, exclude_edges)
    return bipartite_walk(sg, seeds, num_hops, float(restart_prob), float(termination_prob),
                          weighted, excl, generator)


class RandomWalkSampler:
    """``random_walk`` on one graph with fixed parameters (what ``build_sampler`` makes for kind
    ``random_walk``); a ``sampling.protocol.Sampler``.

    ``sample(seeds, generator=None)`` -> traces int64 [S, 2 * num_hops + 1] (see ``random_walk``).
    Calling it works as the ``functools.partial(random_walk, g, num_hops=..., ...)`` it replaces:
    ``sampler(seeds, generator=None, **overrides)``, any ``random_walk`` keyword overriding the
    fixed ones for that call. Arguments are checked by ``random_walk``, at the call.
    """

    def __init__(self, g: GraphLike, num_hops: int = 4, restart_prob: float = 0.0, *,
                 termination_prob: float = 0.0, weighted: bool = False) -> None:
        self.graph = g
        self.num_hops = num_hops
        self.restart_prob = restart_prob
        self.termination_prob = termination_prob
        self.weighted = weighted

    @property
    def keywords(self) -> dict[str, Any]:
        """The fixed ``random_walk`` keywords."""
        return {"num_hops": self.num_hops, "restart_prob": self.restart_prob,
                "termination_prob": self.termination_prob, "weighted": self.weighted}

    def sample(self, seeds: Any, *, generator: torch.Generator | None = None,
               exclude_edges: Any = None) -> torch.Tensor:
        """One walk per seed (int [S] pin ids); ``exclude_edges`` as in ``random_walk``."""
        return random_walk(self.graph, seeds, generator=generator, exclude_edges=exclude_edges, **self.keywords)

    def __call__(self, seeds: Any, **kwargs: Any) -> torch.Tensor:
        return random_walk(self.graph, seeds, **{**self.keywords, **kwargs})

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.keywords.items())
        return f"RandomWalkSampler({args}, graph={self.graph})"


def as_exclusion(sg: SamplingGraph, exclude_edges: Any) -> EdgeExclusion | None:
    """``exclude_edges`` (None, pin-major edge ids, a bool [E] mask or an ``EdgeExclusion``) as an
    ``EdgeExclusion`` of ``sg``; None when it excludes nothing."""
    if exclude_edges is None:
        return None
    excl = exclude_edges if isinstance(exclude_edges, EdgeExclusion) else sg.exclusion(exclude_edges)
    return excl if excl.size else None


def bipartite_walk(sg: SamplingGraph, seeds: torch.Tensor, num_hops: int, restart_prob: float,
                   termination_prob: float, weighted: bool, excl: EdgeExclusion | None,
                   generator: torch.Generator | None) -> torch.Tensor:
    """The pin -> board -> pin walk on prepared inputs (``prepare_seeds``, ``as_exclusion``):
    ``random_walk`` without its checks. The specialization: same random stream and result as
    ``metapath_random_walk`` on ``[pins, boards] * num_hops`` with restart/termination at hops
    2, 4, ... ."""
    device = sg.device
    n = seeds.shape[0]
    pe = excl.pins if excl is not None else None
    be = excl.boards if excl is not None else None
    cols = [seeds]
    if sg.num_edges == 0 or n == 0:
        trace = torch.full((n, 2 * num_hops + 1), -1, dtype=torch.int64, device=device)
        trace[:, 0] = seeds
        return trace
    cur = seeds
    anchor = seeds  # restart target; dead seeds get a stand-in pin below
    # The hop at which each walk stopped (2 * num_hops + 1 = never); -1 is written from there on.
    never = 2 * num_hops + 1
    stop = None
    for h in range(num_hops):
        if h > 0:
            if termination_prob > 0:
                ended = uniform(n, generator, device) < termination_prob
                here = torch.full_like(seeds, never).masked_fill_(ended, 2 * h + 1)
                stop = here if stop is None else torch.minimum(stop, here)
            if restart_prob > 0:
                jump = uniform(n, generator, device) < restart_prob
                cur = torch.where(jump, anchor, cur)
        pos, ok = draw_positions(sg.pins, cur, uniform(n, generator, device), weighted=weighted,
                                 exclude=pe, check=(h == 0))
        if h == 0 and not bool(ok.all()):
            # Seeds without (kept) boards: the walk stops after position 0. They keep walking on
            # a harmless stand-in (position 0) so no later hop needs a check; masked at the end.
            first = torch.where(ok, torch.full_like(seeds, never), torch.ones_like(seeds))
            stop = first if stop is None else torch.minimum(stop, first)
            stand_in = torch.searchsorted(sg.pins.indptr, torch.zeros(1, dtype=torch.int64, device=device),
                                          right=True) - 1      # the pin of edge 0
            anchor = torch.where(ok, seeds, stand_in.expand_as(seeds))
        board = sg.pins.indices.index_select(0, pos)
        pos, _ = draw_positions(sg.boards, board, uniform(n, generator, device), weighted=weighted,
                                exclude=be, check=False)
        cur = sg.boards.indices.index_select(0, pos)
        cols.append(board)
        cols.append(cur)
    trace = torch.stack([c.long() for c in cols], dim=1)
    if stop is not None:
        col = torch.arange(2 * num_hops + 1, device=device)
        trace.masked_fill_(col[None, :] >= stop[:, None], -1)
    return trace


def pin_positions(num_hops: int) -> slice:
    """The trace columns holding the pins visited after each traversal: 2, 4, ..., 2 * num_hops."""
    return slice(2, 2 * num_hops + 1, 2)
