"""``PixieSampler``: Pixie-style queries of several weighted pins, with the multi-hit booster.

After Eksombatchai et al., *Pixie: A System for Recommending 3+ Billion Items to 200+ Million
Users in Real-Time* (WWW 2018), vectorized:

  * a query is a set of pins ``q`` with weights ``w_q`` (e.g. a user's recent pins);
  * the query's walk budget (``num_walks`` walks of ``num_hops`` pin -> board -> pin traversals
    with restart probability ``restart_prob`` back to the walk's own query pin) is split over its
    pins in proportion to ``w_q * s_q``, with Pixie's degree scaling
    ``s_q = deg(q) * (C - log deg(q))``, ``C = max_q log deg(q) + 1`` (a pin on few boards gets
    fewer walks; every pin with positive weight and at least one board gets at least one walk);
    ``degree_scaling=False`` uses ``w_q`` alone;
  * each query pin's walks count visits ``V_q[p]`` of the pins reached after every traversal;
  * the multi-hit booster combines them as ``V[p] = (sum_q sqrt(V_q[p])) ** 2``, which favors pins
    reached from several query pins over pins visited often from one (``boost=False``: plain
    sum ``V[p] = sum_q V_q[p]``);
  * the top ``num_neighbors`` pins by ``V`` (ties: smaller pin id), query pins excluded, are the
    answer. Pixie's early stopping is not implemented: every walk runs its full length.
"""
from __future__ import annotations

from typing import Any

import torch

from sampling.adjacency import GeneratorStateMixin, GraphLike, as_sampling_graph
from sampling.neighborhoods import ImportanceNeighbors, sorted_values, top_per_row
from sampling.threads import with_sampler_threads
from sampling.walks import as_exclusion, bipartite_walk

__all__ = ["PixieSampler"]


class PixieSampler(GeneratorStateMixin):
    """Pixie random walks with restart from weighted multi-pin queries.

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph``.
      num_walks: walks per query (split over its pins), >= 1.
      num_hops: pin -> board -> pin traversals per walk, >= 1.
      restart_prob: probability, before each traversal but the first, of jumping back to the
        walk's query pin, in [0, 1).
      num_neighbors: T, pins returned per query.
      boost: use the multi-hit booster. degree_scaling: Pixie's per-pin budget scaling.
      weighted: walk in proportion to edge weights. seed: seeds the sampler's generator.
      device: where to sample (CSR copied there once); default: the graph's device.
    """

    def __init__(self, g: GraphLike, num_walks: int = 1000, num_hops: int = 4, restart_prob: float = 0.5,
                 num_neighbors: int = 10, boost: bool = True, degree_scaling: bool = True, *,
                 weighted: bool = False, seed: int = 0, device: torch.device | str | None = None) -> None:
        for name, v in (("num_walks", num_walks), ("num_hops", num_hops), ("num_neighbors", num_neighbors)):
            if int(v) != v or v < 1:
                raise ValueError(f"{name}={v} must be an integer >= 1")
        if not 0.0 <= float(restart_prob) < 1.0:
            raise ValueError(f"restart_prob={restart_prob} must be in [0, 1)")
        self.graph = as_sampling_graph(g, device)
        if weighted and not self.graph.has_weights:
            raise ValueError("weighted=True needs edge weights, and this graph has none")
        self.num_walks = int(num_walks)
        self.num_hops = int(num_hops)
        self.restart_prob = float(restart_prob)
        self.num_neighbors = int(num_neighbors)
        self.boost = bool(boost)
        self.degree_scaling = bool(degree_scaling)
        self.weighted = bool(weighted)
        self.generator = torch.Generator(device=self.graph.device)
        self.generator.manual_seed(int(seed))

    def walk_budget(self, pins: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """int64 [S, Q]: walks given to each query pin (pins int64 [S, Q], -1 padded; weights
        float [S, Q])."""
        sg = self.graph
        valid = (pins >= 0) & (weights > 0)
        deg = torch.where(valid, sg.pins.degrees(pins.clamp_min(0)), torch.zeros_like(pins)).double()
        valid &= deg > 0
        share = torch.where(valid, weights.double(), torch.zeros_like(deg))
        if self.degree_scaling:
            logd = torch.where(valid, deg.clamp_min(1).log(), torch.zeros_like(deg))
            c = logd.max(dim=1, keepdim=True).values + 1.0
            share = share * deg * (c - logd)
        total = share.sum(dim=1, keepdim=True)
        share = torch.where(total > 0, share / total.clamp_min(1e-300), share)
        walks = torch.floor(share * self.num_walks + 0.5).long()
        return torch.where(valid, walks.clamp_min(1), torch.zeros_like(walks))

    def query(self, pins: Any, weights: Any = None, **kwargs: Any) -> ImportanceNeighbors:
        """One query of several pins (int [Q]) with weights (float [Q], default 1). Returns
        ``ImportanceNeighbors`` with S = 1 (``seeds`` = the first query pin)."""
        pins = torch.as_tensor(pins, device=self.graph.device).long().reshape(1, -1)
        if weights is not None:
            weights = torch.as_tensor(weights, device=self.graph.device).reshape(1, -1)
        return self.query_batch(pins, weights, **kwargs)

    def _prepare(self, pins: Any, weights: Any) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.graph.device
        pins = torch.as_tensor(pins, device=device)
        if pins.dim() == 1:
            pins = pins[:, None]
        if pins.dim() != 2 or pins.is_floating_point():
            raise ValueError(f"query pins: expected int [S, Q], got {pins.dtype}{list(pins.shape)}")
        pins = pins.long()
        if pins.numel() and int(pins.max()) >= self.graph.num_pins:
            raise ValueError(f"query pins: id {int(pins.max())} is out of range [0, {self.graph.num_pins})")
        if weights is None:
            weights = (pins >= 0).double()
        weights = torch.as_tensor(weights, device=device).double().reshape(pins.shape)
        if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
            raise ValueError("query weights must be finite and >= 0")
        return pins, weights

    @with_sampler_threads
    def visit_counts(self, pins: Any, weights: Any = None, *, generator: torch.Generator | None = None,
                     exclude_edges: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per query pin visit counts ``V_q[p]``.

        Returns (row int64 [U], slot int64 [U] (which query pin, 0 <= slot < Q), pin int64 [U],
        count int64 [U]) sorted by (row, slot, pin), and total_visits int64 [S].
        """
        sg = self.graph
        device = sg.device
        pins, weights = self._prepare(pins, weights)
        s, q = pins.shape
        gen = self.generator if generator is None else generator
        budget = self.walk_budget(pins, weights).flatten()                     # [S * Q]
        owner = torch.arange(s * q, device=device).repeat_interleave(budget)   # walker -> row * Q + slot
        trace = bipartite_walk(sg, pins.flatten()[owner], self.num_hops, self.restart_prob, 0.0,
                               self.weighted, as_exclusion(sg, exclude_edges), gen)
        visited = trace[:, 2::2]                                               # [walkers, num_hops]
        ok = visited >= 0
        owner = owner[:, None].expand_as(visited)[ok]
        visited = visited[ok]
        total = torch.bincount(torch.div(owner, q, rounding_mode="floor"), minlength=s)
        key = owner * sg.num_pins + visited
        uniq, counts = torch.unique_consecutive(sorted_values(key), return_counts=True)
        slot = torch.div(uniq, sg.num_pins, rounding_mode="floor")
        row = torch.div(slot, q, rounding_mode="floor")
        return row, slot - row * q, uniq - slot * sg.num_pins, counts, total

    @staticmethod
    def combine(row: torch.Tensor, pin: torch.Tensor, count: torch.Tensor, num_pins: int, boost: bool = True
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Combine per query pin counts into one score per (row, pin): ``(sum_q sqrt V_q) ** 2``
        with the booster, ``sum_q V_q`` without. Returns (row, pin, score float64) sorted by
        (row, pin)."""
        key = row * num_pins + pin
        k2, inverse = torch.unique(key, sorted=True, return_inverse=True)
        contrib = count.double().sqrt() if boost else count.double()
        score = torch.zeros(k2.shape[0], dtype=torch.float64, device=key.device).index_add_(0, inverse, contrib)
        if boost:
            score = score * score
        r = torch.div(k2, num_pins, rounding_mode="floor")
        return r, k2 - r * num_pins, score

    @with_sampler_threads
    def query_batch(self, pins: Any, weights: Any = None, *, generator: torch.Generator | None = None,
                    exclude_edges: Any = None, exclude_query: bool = True) -> ImportanceNeighbors:
        """S queries at once. pins: int [S, Q] (-1 pads shorter queries); weights: float [S, Q]
        (default 1 for present pins). exclude_query: drop the query pins from the answer.
        Returns ``ImportanceNeighbors``: neighbors int64 [S, T]; weights float32 [S, T] = the
        (boosted) scores ``V``; total_visits int64 [S]."""
        sg = self.graph
        device = sg.device
        pins, weights = self._prepare(pins, weights)
        s = pins.shape[0]
        row, _, pin, count, total = self.visit_counts(pins, weights, generator=generator,
                                                      exclude_edges=exclude_edges)
        r, p, score = self.combine(row, pin, count, sg.num_pins, self.boost)
        if exclude_query:
            qkey = torch.arange(s, device=device)[:, None] * sg.num_pins + pins.clamp_min(0)
            is_query = torch.isin(r * sg.num_pins + p, qkey[pins >= 0])
            r, p, score = r[~is_query], p[~is_query], score[~is_query]
        if not self.boost:
            score = score.round().long()
        top, best = top_per_row(r, p, score, s, self.num_neighbors, sg.num_pins)
        first = torch.where(pins[:, 0] >= 0, pins[:, 0], torch.full_like(pins[:, 0], -1))
        return ImportanceNeighbors(first, top, best.float(), total)

    def sample(self, seeds: Any, *, generator: torch.Generator | None = None, exclude_edges: Any = None,
               exclude_query: bool = True) -> ImportanceNeighbors:
        """Single-pin queries, one per seed (int [S] pin ids): ``query_batch(seeds[:, None], ...)``,
        the ``sampling.protocol.Sampler`` form."""
        return self.query_batch(seeds, generator=generator, exclude_edges=exclude_edges,
                                exclude_query=exclude_query)
