"""``PinSageSampler``: importance neighborhoods from short random walks (PinSage, DGL semantics).

For each seed pin, ``num_random_walks`` walks each take up to ``num_traversals`` pin -> board ->
pin traversals, and stop after each traversal (but the last) with probability
``termination_prob``. Every pin reached after a traversal is one visit; the ``num_neighbors``
most visited pins, the seed itself excluded, are the seed's importance neighbors, their visit
counts the importance weights. Ties: more visits first, then the smaller pin id.

This is DGL's ``PinSAGESampler`` (``random_walk`` with ``restart_prob`` = termination_prob before
hops 2, 4, ...; visits read at every second trace position) except that DGL keeps the seed in
its top-k and breaks ties by the larger id.

The walk here is the bipartite specialization with *compaction*: walks that stop are dropped
from the working set, so later traversals only pay for live walks; counting is one sort of the
combined key ``seed_row * P + pin`` (``sampling.neighborhoods.count_visits``).
"""
from __future__ import annotations

from typing import Any

import torch

from sampling.adjacency import EdgeExclusion, GeneratorStateMixin, GraphLike, SamplingGraph, as_sampling_graph
from sampling.neighborhoods import ImportanceNeighbors, count_visits, top_per_row
from sampling.steps import draw_positions, uniform
from sampling.threads import with_sampler_threads
from sampling.walks import as_exclusion, prepare_seeds

__all__ = ["PinSageSampler", "pinsage_visits"]


def pinsage_visits(sg: SamplingGraph, seeds: torch.Tensor, num_traversals: int, termination_prob: float,
                   num_random_walks: int, generator: torch.Generator | None, *, weighted: bool = False,
                   exclude: EdgeExclusion | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the walks and return every visit as (row int64 [N], pin int32|int64 [N]).

    ``row`` indexes ``seeds``. Random numbers, per traversal ``t``: a termination draw for every
    live walk (t > 0 and termination_prob > 0), then one draw per live walk for the board and one
    for the pin. Walks are seed-major: walk ``w`` of seed ``i`` is walker ``i * W + w``.
    """
    device = sg.device
    rows = torch.arange(seeds.shape[0], device=device).repeat_interleave(num_random_walks)
    cur = seeds.repeat_interleave(num_random_walks)
    pe = exclude.pins if exclude is not None else None
    be = exclude.boards if exclude is not None else None
    vis_rows, vis_pins = [], []
    if sg.num_edges == 0:
        return rows[:0], cur[:0]
    for t in range(num_traversals):
        if t > 0 and termination_prob > 0:
            keep = (uniform(rows.shape[0], generator, device) >= termination_prob).nonzero().flatten()
            rows, cur = rows.index_select(0, keep), cur.index_select(0, keep)
        n = rows.shape[0]
        if n == 0:
            break
        pos, ok = draw_positions(sg.pins, cur, uniform(n, generator, device), weighted=weighted,
                                 exclude=pe, check=(t == 0))
        if t == 0 and not bool(ok.all()):
            keep = ok.nonzero().flatten()   # seeds without boards: no walk
            rows, pos = rows.index_select(0, keep), pos.index_select(0, keep)
            n = rows.shape[0]
        board = sg.pins.indices.index_select(0, pos)
        pos, _ = draw_positions(sg.boards, board, uniform(n, generator, device), weighted=weighted,
                                exclude=be, check=False)
        cur = sg.boards.indices.index_select(0, pos)
        vis_rows.append(rows)
        vis_pins.append(cur)
    if not vis_rows:
        return rows[:0], cur[:0]
    return torch.cat(vis_rows), torch.cat(vis_pins)


def _drop_pairs(rows: torch.Tensor, items: torch.Tensor, counts: torch.Tensor, exclude: Any, num_rows: int,
                num_items: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Remove the (row, item) entries listed per row in ``exclude`` (int [S] or [S, X], -1 = none)."""
    ex = torch.as_tensor(exclude, device=rows.device).long()
    if ex.dim() == 1:
        ex = ex[:, None]
    if ex.dim() != 2 or ex.shape[0] != num_rows:
        raise ValueError(f"exclude_neighbors: expected [{num_rows}] or [{num_rows}, X], got {list(ex.shape)}")
    row_of = torch.arange(num_rows, device=rows.device)[:, None].expand_as(ex)
    ok = ex >= 0
    bad = torch.isin(rows * num_items + items, row_of[ok] * num_items + ex[ok])
    keep = (~bad).nonzero().flatten()
    return rows[keep], items[keep], counts[keep]


class PinSageSampler(GeneratorStateMixin):
    """PinSage importance neighborhoods (see the module docstring).

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph``.
      num_traversals: max pin -> board -> pin traversals per walk (>= 1).
      termination_prob: stop probability after each traversal, in [0, 1].
      num_random_walks: walks per seed (>= 1).
      num_neighbors: T, neighbors kept per seed (>= 1).
      seed: seeds the sampler's own ``torch.Generator`` (used when ``sample`` gets none).
      weighted: walk in proportion to edge weights.
      exclude_edges: edges removed for every call (held-out / cold-start edges): pin-major ids or
        a bool [E] mask; the CSR is rebuilt once without them (``SamplingGraph.without_edges``).
      device: where to sample (the CSR tensors are copied there once); default: the graph's.
    """

    def __init__(self, g: GraphLike, num_traversals: int = 3, termination_prob: float = 0.5,
                 num_random_walks: int = 200, num_neighbors: int = 10, seed: int = 0, *,
                 weighted: bool = False, exclude_edges: Any = None,
                 device: torch.device | str | None = None) -> None:
        for name, v in (("num_traversals", num_traversals), ("num_random_walks", num_random_walks),
                        ("num_neighbors", num_neighbors)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name}={v} must be an integer >= 1")
        if not 0.0 <= float(termination_prob) <= 1.0:
            raise ValueError(f"termination_prob={termination_prob} must be in [0, 1]")
        sg = as_sampling_graph(g, device)
        if exclude_edges is not None:
            sg = sg.without_edges(exclude_edges)
        if weighted and not sg.has_weights:
            raise ValueError("weighted=True needs edge weights, and this graph has none")
        self.graph = sg
        self.num_traversals = int(num_traversals)
        self.termination_prob = float(termination_prob)
        self.num_random_walks = int(num_random_walks)
        self.num_neighbors = int(num_neighbors)
        self.weighted = bool(weighted)
        self.generator = torch.Generator(device=sg.device)
        self.generator.manual_seed(int(seed))

    @property
    def device(self) -> torch.device:
        return self.graph.device

    def __repr__(self) -> str:
        return (f"PinSageSampler(num_traversals={self.num_traversals}, termination_prob={self.termination_prob}, "
                f"num_random_walks={self.num_random_walks}, num_neighbors={self.num_neighbors}, "
                f"weighted={self.weighted}, graph={self.graph})")

    @with_sampler_threads
    def sample(self, seeds: Any, *, generator: torch.Generator | None = None, exclude_edges: Any = None,
               exclude_neighbors: Any = None, num_neighbors: int | None = None) -> ImportanceNeighbors:
        """Importance neighborhoods of ``seeds`` (int [S] pin ids; duplicates are sampled apart).

        generator: draw from this ``torch.Generator`` (on the graph's device) instead of the
        sampler's own. exclude_edges: edges not to traverse in this call only (pin-major ids, a bool
        mask or an ``EdgeExclusion``, e.g. ``sampler.graph.exclusion_of_pairs(pins, boards)`` for
        the target pairs of a training batch). exclude_neighbors: int [S] or [S, X] pins (-1 =
        none) that must not be neighbors of the seed in the same row, e.g. the tail pin of a
        (head, tail) training pair (DGL's PinSAGE example removes that edge from the frontier).
        num_neighbors: override T for this call.
        Returns ``ImportanceNeighbors`` (neighbors int64 [S, T], weights float32 [S, T]).
        """
        sg = self.graph
        seeds = prepare_seeds(seeds, sg.num_pins, sg.device)
        k = self.num_neighbors if num_neighbors is None else int(num_neighbors)
        gen = self.generator if generator is None else generator
        rows, pins = pinsage_visits(sg, seeds, self.num_traversals, self.termination_prob,
                                    self.num_random_walks, gen, weighted=self.weighted,
                                    exclude=as_exclusion(sg, exclude_edges))
        total = torch.bincount(rows, minlength=seeds.shape[0])
        r, items, counts = count_visits(rows, pins, sg.num_pins, drop=seeds)
        if exclude_neighbors is not None:
            r, items, counts = _drop_pairs(r, items, counts, exclude_neighbors, seeds.shape[0], sg.num_pins)
        top, best = top_per_row(r, items, counts, seeds.shape[0], k, sg.num_pins)
        return ImportanceNeighbors(seeds, top, best.float(), total)

    __call__ = sample

    @with_sampler_threads
    def visit_counts(self, seeds: Any, *, generator: torch.Generator | None = None,
                     exclude_edges: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every visited pin with its count, seed excluded: (row int64 [U], pin int64 [U],
        count int64 [U]) sorted by (row, pin); ``row`` indexes ``seeds``."""
        sg = self.graph
        seeds = prepare_seeds(seeds, sg.num_pins, sg.device)
        gen = self.generator if generator is None else generator
        rows, pins = pinsage_visits(sg, seeds, self.num_traversals, self.termination_prob,
                                    self.num_random_walks, gen, weighted=self.weighted,
                                    exclude=as_exclusion(sg, exclude_edges))
        return count_visits(rows, pins, sg.num_pins, drop=seeds)
