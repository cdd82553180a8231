"""``NeighborPairSampler``: positive pairs, negatives and the false-negative mask for the
neighbor-alignment loss (``pinclip.losses.neighbor_alignment_loss``).

For a batch of S seed pins:
  * positives: K neighbor pins per seed, drawn *without replacement* from the seed's top-T
    PinSage importance neighborhood with probability proportional to visit count (Gumbel top-K
    on ``log(count)``); fewer than K when the neighborhood is smaller (-1 padding);
  * positive_weights: the drawn pins' visit counts (``positive_weighting="visits"``, what the
    loss expects as ``neighbor_weights``) or 1 (``"uniform"``); 0 for padding;
  * false_negative_mask [S, S*K]: True where column ``j*K + k`` (positive k of seed j) must not be
    a negative for seed i: the same pin as seed i, one of seed i's top-T importance neighbors, or
    a pin sharing a board with seed i. Seed i's own block ``i*K:(i+1)*K`` is True for its present
    positives (they are its importance neighbors); padding columns are False (the loss drops them
    through ``neighbor_weights == 0``);
  * negatives [N]: uniform random pins shared by the whole batch (PinSage's shared negatives),
    with negative_mask [S, N] marking those that are false negatives for a seed (same rule);
  * hard_negatives [S, H] with hard_negative_mask [S, S*H] (the same rule for other seeds' hard
    negatives, and padding): pins ranked between ``hard_rank_range[0]`` and ``hard_rank_range[1]``
    by visit count in a longer walk from the seed (PinSage's curriculum negatives), drawn
    uniformly from that band, never the seed, one of its top-T neighbors, or a pin sharing a
    board with it (-1 padding when the band is short).
Every draw comes from the generator passed to ``sample`` (or the sampler's own).
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Sequence

import torch

from sampling.adjacency import GraphLike, SamplingGraph, expand_segments
from sampling.neighborhoods import ImportanceNeighbors, count_visits, top_per_row
from sampling.pinsage import PinSageSampler, pinsage_visits
from sampling.threads import with_sampler_threads
from sampling.walks import as_exclusion, prepare_seeds

__all__ = ["NeighborPairs", "NeighborPairSampler", "false_negative_mask", "shares_board"]


@dataclass
class NeighborPairs:
    """One batch of neighbor-alignment pairs (S seeds, K positives, N shared negatives, H hard).

    seeds               int64 [S]       seed pin ids
    positives           int64 [S, K]    positive neighbor pins, -1 padding
    positive_weights    float32 [S, K]  visit counts (or 1) of the positives, 0 for padding:
                                        the loss's ``neighbor_weights``
    false_negative_mask bool [S, S*K]   True: column j*K+k is not a negative for seed i
    negatives           int64 [N]       uniform negatives shared by the batch
    negative_mask       bool [S, N]     True: negative n is a false negative for seed i
    hard_negatives      int64 [S, H]    hard negatives, -1 padding (H may be 0)
    hard_negative_mask  bool [S, S*H]   True: column j*H+h (hard negative h of seed j) is not a
                                        negative for seed i (padding, or a false negative of i;
                                        seed i's own hard negatives are never false negatives)
    neighborhoods       ImportanceNeighbors (the top-T the positives were drawn from)

    ``extra_negatives()`` packs the shared and hard negatives the way
    ``neighbor_alignment_loss(..., negatives=, negative_mask=)`` takes them.
    """

    seeds: torch.Tensor
    positives: torch.Tensor
    positive_weights: torch.Tensor
    false_negative_mask: torch.Tensor
    negatives: torch.Tensor
    negative_mask: torch.Tensor
    hard_negatives: torch.Tensor
    hard_negative_mask: torch.Tensor
    neighborhoods: ImportanceNeighbors

    @property
    def num_positives(self) -> int:
        return int(self.positives.shape[1])

    def extra_negatives(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids int64 [M], mask bool [S, M]) with M = N + S*H: the shared negatives, then every
        seed's hard negatives flattened (-1 = padding); mask True where column m is not a
        negative for seed s. Embed ``ids.clamp_min(0)`` and pass the embeddings (a dict keyed like the
        model outputs, e.g. ``{"fused_emb": ...}``) and ``mask`` to ``neighbor_alignment_loss`` as
        ``negatives`` / ``negative_mask``."""
        ids = torch.cat([self.negatives, self.hard_negatives.flatten()])
        return ids, torch.cat([self.negative_mask, self.hard_negative_mask], dim=1)

    def pins(self) -> torch.Tensor:
        """int64 [U]: every distinct pin id of the batch (to fetch features once), sorted."""
        parts = [self.seeds, self.positives.flatten(), self.negatives, self.hard_negatives.flatten()]
        allp = torch.cat(parts)
        return torch.unique(allp[allp >= 0])

    def to(self, device: torch.device | str) -> "NeighborPairs":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.to(device)
        return NeighborPairs(**out)


# ------------------------------------------------------------------------------ joins and masks
def _join(a_key: torch.Tensor, a_id: torch.Tensor, b_key: torch.Tensor, b_id: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """All pairs (a_id[i], b_id[j]) with a_key[i] == b_key[j] (int64 tensors)."""
    bk, order = torch.sort(b_key)
    lo = torch.searchsorted(bk, a_key)
    hi = torch.searchsorted(bk, a_key, right=True)
    pos, owner = expand_segments(lo, hi - lo)
    return a_id[owner], b_id[order[pos]]


def _boards_of(sg: SamplingGraph, pins: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(boards int64 [M], owner int64 [M]: index into ``pins``) of every edge of ``pins``."""
    pos, owner = expand_segments(sg.pins.indptr[pins], sg.pins.degrees(pins))
    return sg.pins.indices[pos].long(), owner


def shares_board(sg: SamplingGraph, seeds: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """bool [S, C]: seed i and candidate pin c (-1 = none) are on a common board."""
    out = torch.zeros((seeds.shape[0], cand.shape[0]), dtype=torch.bool, device=seeds.device)
    present = (cand >= 0).nonzero().flatten()
    if present.numel() == 0 or seeds.numel() == 0:
        return out
    uc, inv = torch.unique(cand[present], return_inverse=True)
    sb, so = _boards_of(sg, seeds)
    cb, co = _boards_of(sg, uc)
    i, j = _join(sb, so, cb, co)
    dense = torch.zeros((seeds.shape[0], uc.shape[0]), dtype=torch.bool, device=seeds.device)
    dense[i, j] = True
    out[:, present] = dense[:, inv]
    return out


def _shares_board_rowwise(sg: SamplingGraph, seeds: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
    """bool [S, M]: cand[i, m] (-1 = none) shares a board with seeds[i] (row-aligned check)."""
    s, m = cand.shape
    out = torch.zeros((s, m), dtype=torch.bool, device=seeds.device)
    flat = cand.flatten()
    present = (flat >= 0).nonzero().flatten()
    if present.numel() == 0:
        return out
    nb = sg.num_boards
    sb, so = _boards_of(sg, seeds)
    cb, co = _boards_of(sg, flat[present])
    crow = torch.div(present, m, rounding_mode="floor")[co]
    _, j = _join(so * nb + sb, so, crow * nb + cb, present[co])
    out.view(-1)[j] = True
    return out


def false_negative_mask(sg: SamplingGraph, seeds: torch.Tensor, cand: torch.Tensor,
                        neighbors: torch.Tensor | None, shared_boards: bool = True) -> torch.Tensor:
    """bool [S, C]: candidate pin ``cand[c]`` (-1 = none, always False) must not be a negative for
    ``seeds[i]``: the same pin, in ``neighbors[i]`` (int64 [S, T], -1 padded; None: skip), or
    (``shared_boards``) on a common board."""
    present = cand >= 0
    mask = (seeds[:, None] == cand[None, :]) & present[None, :]
    if neighbors is not None and neighbors.numel():
        s, t = neighbors.shape
        nrow = torch.arange(s, device=seeds.device)[:, None].expand(s, t)
        ok = neighbors >= 0
        cidx = present.nonzero().flatten()
        i, j = _join(neighbors[ok], nrow[ok], cand[cidx], cidx)
        mask[i, j] = True
    if shared_boards:
        mask |= shares_board(sg, seeds, cand)
    return mask


# ------------------------------------------------------------------------------ the sampler
class NeighborPairSampler:
    """Neighbor-alignment pairs for batches of seed pins (see the module docstring).

    Args:
      g: ``PinBoardGraph`` or ``SamplingGraph`` (the *training* graph: pass ``g.train_graph()``
        or ``exclude_edges`` so held-out and cold-start edges cannot leak).
      num_positives: K. num_traversals, termination_prob, num_random_walks, num_neighbors: the
        PinSage walk the positives come from (T = num_neighbors >= K).
      positive_weighting: ``"visits"`` or ``"uniform"``.
      num_negatives: N shared uniform negatives per batch (0: none).
      negative_pool: int [M] pin ids uniform negatives are drawn from (default: every pin).
      num_hard_negatives: H per seed (0: none; the loader's curriculum may lower it per epoch).
      hard_rank_range: (lo, hi) visit-count ranks (0 = most visited) of the hard-negative band.
      hard_num_random_walks, hard_num_traversals, hard_termination_prob: the longer walk ranking
        hard negatives.
      mask_shared_boards: include shared boards in the masks (else only same pin + top-T).
      weighted: walk in proportion to edge weights. exclude_edges: edges removed for good
      (pin-major ids or bool [E] mask). seed: the sampler's generator. device: where to sample.
    """

    def __init__(self, g: GraphLike, num_positives: int = 4, *, num_traversals: int = 3,
                 termination_prob: float = 0.5, num_random_walks: int = 200, num_neighbors: int = 10,
                 positive_weighting: str = "visits", num_negatives: int = 0,
                 negative_pool: Any = None, num_hard_negatives: int = 0,
                 hard_rank_range: Sequence[int] = (10, 100), hard_num_random_walks: int = 400,
                 hard_num_traversals: int = 4, hard_termination_prob: float = 0.3,
                 mask_shared_boards: bool = True, weighted: bool = False, exclude_edges: Any = None,
                 seed: int = 0, device: torch.device | str | None = None) -> None:
        if int(num_positives) < 1 or int(num_positives) > int(num_neighbors):
            raise ValueError(f"num_positives={num_positives} must be in [1, num_neighbors={num_neighbors}]")
        if positive_weighting not in ("visits", "uniform"):
            raise ValueError(f"positive_weighting={positive_weighting!r}: expected 'visits' or 'uniform'")
        lo, hi = (int(v) for v in hard_rank_range)
        if not 0 <= lo < hi:
            raise ValueError(f"hard_rank_range=({lo}, {hi}): expected 0 <= lo < hi")
        for name, v in (("num_negatives", num_negatives), ("num_hard_negatives", num_hard_negatives)):
            if int(v) < 0:
                raise ValueError(f"{name}={v} must be >= 0")
        self.pinsage = PinSageSampler(g, num_traversals, termination_prob, num_random_walks, num_neighbors,
                                      seed, weighted=weighted, exclude_edges=exclude_edges, device=device)
        self.graph = self.pinsage.graph
        self.num_positives = int(num_positives)
        self.positive_weighting = positive_weighting
        self.num_negatives = int(num_negatives)
        sg = self.graph
        self.negative_pool = None
        if negative_pool is not None:
            pool = prepare_seeds(negative_pool, sg.num_pins, sg.device, "negative_pool")
            if pool.numel() == 0:
                raise ValueError("negative_pool is empty")
            self.negative_pool = pool
        self.num_hard_negatives = int(num_hard_negatives)
        self.hard_rank_range = (lo, hi)
        self.hard_num_random_walks = int(hard_num_random_walks)
        self.hard_num_traversals = int(hard_num_traversals)
        self.hard_termination_prob = float(hard_termination_prob)
        self.mask_shared_boards = bool(mask_shared_boards)
        self.weighted = bool(weighted)

    @property
    def device(self) -> torch.device:
        return self.graph.device

    @property
    def generator(self) -> torch.Generator:
        """The sampler's own generator (shared with its ``PinSageSampler``)."""
        return self.pinsage.generator

    @with_sampler_threads
    def sample(self, seeds: Any, *, generator: torch.Generator | None = None, exclude_edges: Any = None,
               exclude_neighbors: Any = None, num_hard_negatives: int | None = None) -> NeighborPairs:
        """Pairs for ``seeds`` (int [S] pin ids). exclude_edges: edges not traversed in this call
        (e.g. the target pairs of the batch); exclude_neighbors: int [S] or [S, X] pins that must
        not be positives of the seed in the same row (see ``PinSageSampler.sample``);
        num_hard_negatives: override H (curriculum)."""
        sg = self.graph
        device = sg.device
        gen = self.generator if generator is None else generator
        seeds = prepare_seeds(seeds, sg.num_pins, device)
        excl = as_exclusion(sg, exclude_edges)
        s, k = seeds.shape[0], self.num_positives
        nb = self.pinsage.sample(seeds, generator=gen, exclude_edges=excl, exclude_neighbors=exclude_neighbors)

        # Positives: Gumbel top-K over log visit counts (K draws without replacement, each in
        # proportion to count among the ones not drawn yet).
        u = torch.rand(nb.weights.shape, generator=gen, dtype=torch.float64, device=device)
        keys = nb.weights.double().log() - torch.log(-torch.log(u.clamp_min(1e-300)))
        keys = keys.masked_fill(nb.neighbors < 0, float("-inf"))
        kv, ki = torch.topk(keys, k, dim=1)
        present = kv > float("-inf")
        positives = torch.where(present, nb.neighbors.gather(1, ki), torch.full_like(ki, -1))
        if self.positive_weighting == "visits":
            pw = torch.where(present, nb.weights.gather(1, ki), torch.zeros_like(kv, dtype=torch.float32))
        else:
            pw = present.float()

        # Uniform negatives shared by the batch.
        n = self.num_negatives
        if self.negative_pool is None:
            negatives = torch.randint(0, sg.num_pins, (n,), generator=gen, device=device)
        else:
            pick = torch.randint(0, self.negative_pool.shape[0], (n,), generator=gen, device=device)
            negatives = self.negative_pool[pick]

        h = self.num_hard_negatives if num_hard_negatives is None else int(num_hard_negatives)
        hard = self._hard_negatives(seeds, nb, h, gen, excl)

        # One mask computation over every candidate column: positives, shared, hard negatives.
        cand = torch.cat([positives.flatten(), negatives, hard.flatten()])
        mask = false_negative_mask(sg, seeds, cand, nb.neighbors, self.mask_shared_boards)
        fn_mask, neg_mask = mask[:, : s * k], mask[:, s * k: s * k + n]
        hard_mask = mask[:, s * k + n:] | (hard.flatten() < 0)[None, :]
        return NeighborPairs(seeds, positives, pw.float(), fn_mask, negatives, neg_mask, hard, hard_mask, nb)

    __call__ = sample

    def _hard_negatives(self, seeds: torch.Tensor, nb: ImportanceNeighbors, h: int,
                        gen: torch.Generator | None, excl: Any) -> torch.Tensor:
        sg = self.graph
        device = sg.device
        s = seeds.shape[0]
        if h <= 0 or s == 0:
            return torch.full((s, max(h, 0)), -1, dtype=torch.int64, device=device)
        lo, hi = self.hard_rank_range
        rows, pins = pinsage_visits(sg, seeds, self.hard_num_traversals, self.hard_termination_prob,
                                    self.hard_num_random_walks, gen, weighted=self.weighted, exclude=excl)
        r, items, counts = count_visits(rows, pins, sg.num_pins, drop=seeds)
        ranked, _ = top_per_row(r, items, counts, s, hi, sg.num_pins)
        band = ranked[:, lo:hi]                                              # [S, hi - lo]
        bad = false_negative_mask_rowwise(sg, seeds, band, nb.neighbors, self.mask_shared_boards)
        ok = (band >= 0) & ~bad
        keys = torch.rand(band.shape, generator=gen, device=device).masked_fill(~ok, -1.0)
        hh = min(h, band.shape[1])
        kv, ki = torch.topk(keys, hh, dim=1)
        out = torch.where(kv >= 0, band.gather(1, ki), torch.full_like(ki, -1))
        if hh < h:
            out = torch.cat([out, torch.full((s, h - hh), -1, dtype=torch.int64, device=device)], 1)
        return out


def false_negative_mask_rowwise(sg: SamplingGraph, seeds: torch.Tensor, cand: torch.Tensor,
                                neighbors: torch.Tensor | None, shared_boards: bool = True) -> torch.Tensor:
    """bool [S, M]: like ``false_negative_mask`` but candidate ``cand[i, m]`` is checked against
    ``seeds[i]`` only."""
    present = cand >= 0
    mask = (cand == seeds[:, None]) & present
    if neighbors is not None and neighbors.numel():
        mask |= (cand[:, :, None] == neighbors[:, None, :]).any(dim=2) & present
    if shared_boards:
        mask |= _shares_board_rowwise(sg, seeds, cand)
    return mask
