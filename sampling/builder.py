"""Factories: the sampler a ``SamplerConfig`` describes (``build_sampler``) and its pair loader
(``build_pair_loader``). The one way samplers are built: notebooks, benchmarks and the trainer
(``training.trainer``) all go through ``build_sampler``. Also exported by ``sampling.config`` and
``sampling``.

    from sampling import build_sampler, load_sampler_config
    sampler = build_sampler(load_sampler_config("pinsage_default"), g)
    nb = sampler.sample(seeds)                  # every kind is a ``sampling.protocol.Sampler``
"""
from __future__ import annotations

from typing import Any, Union

import numpy as np
import torch

from graph.splits import SPLIT_NAMES
from sampling.adjacency import GraphLike, SamplingGraph, as_sampling_graph
from sampling.config import SamplerConfig, SamplerConfigError
from sampling.fanout import FanoutSampler
from sampling.loader import NeighborPairDataset, NeighborPairLoader, SeedBatches
from sampling.pairs import NeighborPairSampler
from sampling.pinsage import PinSageSampler
from sampling.pixie import PixieSampler
from sampling.walks import RandomWalkSampler

__all__ = ["build_sampler", "build_pair_loader", "AnySampler"]

# What build_sampler returns, by cfg.kind.
AnySampler = Union[RandomWalkSampler, PinSageSampler, PixieSampler, FanoutSampler, NeighborPairSampler]


def _sampling_graph(cfg: SamplerConfig, g: GraphLike) -> SamplingGraph:
    sg = as_sampling_graph(g, cfg.device)
    splits = getattr(g, "splits", None)
    if splits is not None and cfg.exclude_splits:
        codes = [c for c, n in SPLIT_NAMES.items() if n in cfg.exclude_splits]
        mask = np.isin(np.asarray(splits.edge_split), codes)
        if mask.any():
            sg = sg.without_edges(torch.from_numpy(mask).to(sg.device))
    return sg


def build_sampler(cfg: SamplerConfig, g: GraphLike, negative_pool: Any = None, *,
                  use_negatives: bool = True) -> AnySampler:
    """The sampler ``cfg.kind`` names, on ``g`` (a ``PinBoardGraph`` or ``SamplingGraph``), on
    ``cfg.device`` (None: where ``g`` is).

    ``random_walk`` returns a ``RandomWalkSampler`` (callable as ``f(seeds, generator=None) ->
    traces``, like the ``functools.partial`` of ``random_walk`` it used to be); the others return
    ``PinSageSampler``, ``PixieSampler``, ``FanoutSampler`` or ``NeighborPairSampler``. Every one
    is a ``sampling.protocol.Sampler``. Edges of ``cfg.exclude_splits`` are removed first when
    ``g`` has splits (a graph without splits, e.g. ``PinBoardGraph.train_graph()``, is used as
    it is).

    ``pairs`` only:
      negative_pool: int [M] pins uniform negatives are drawn from. Default: when edges were
        excluded, the pins that kept at least one edge, so a cold-start pin (all of its edges
        hidden) never enters training as a negative; otherwise every pin. The trainer passes its
        train pins (``training.data.train_pins``).
      use_negatives: False draws no negatives at all (``pairs.num_negatives`` and
        ``pairs.num_hard_negatives`` taken as 0; the trainer's ``loss.use_negatives: false``).
    """
    sg = _sampling_graph(cfg, g)
    if cfg.kind == "random_walk":
        c = cfg.random_walk
        return RandomWalkSampler(sg, num_hops=c.num_hops, restart_prob=c.restart_prob,
                                 termination_prob=c.termination_prob, weighted=c.weighted)
    if cfg.kind == "pinsage":
        c = cfg.pinsage
        return PinSageSampler(sg, c.num_traversals, c.termination_prob, c.num_random_walks, c.num_neighbors,
                              cfg.seed, weighted=c.weighted)
    if cfg.kind == "pixie":
        c = cfg.pixie
        return PixieSampler(sg, c.num_walks, c.num_hops, c.restart_prob, c.num_neighbors, c.boost,
                            c.degree_scaling, weighted=c.weighted, seed=cfg.seed)
    if cfg.kind == "fanout":
        c = cfg.fanout
        return FanoutSampler(sg, c.fanouts, c.seed_type, weighted=c.weighted, replace=c.replace, seed=cfg.seed,
                             edge_id_table=c.edge_id_table)
    c, w = cfg.pairs, cfg.pinsage
    if negative_pool is None and sg.num_edges < getattr(g, "num_edges", sg.num_edges):
        negative_pool = torch.nonzero(sg.pins.degrees() > 0).squeeze(1)
    return NeighborPairSampler(
        sg, c.num_positives, num_traversals=w.num_traversals, termination_prob=w.termination_prob,
        num_random_walks=w.num_random_walks, num_neighbors=w.num_neighbors,
        positive_weighting=c.positive_weighting, num_negatives=c.num_negatives if use_negatives else 0,
        negative_pool=negative_pool, num_hard_negatives=c.num_hard_negatives if use_negatives else 0,
        hard_rank_range=c.hard_rank_range, hard_num_random_walks=c.hard_num_random_walks,
        hard_num_traversals=c.hard_num_traversals, hard_termination_prob=c.hard_termination_prob,
        mask_shared_boards=c.mask_shared_boards, weighted=w.weighted, seed=cfg.seed)


def build_pair_loader(cfg: SamplerConfig, g: GraphLike, seeds: Any, *, rank: int = 0, world_size: int = 1,
                      sampler: NeighborPairSampler | None = None) -> NeighborPairLoader:
    """A ``NeighborPairLoader`` over ``seeds`` (int [N] pin ids) from a ``pairs`` config."""
    if cfg.kind != "pairs" and sampler is None:
        raise SamplerConfigError(f"build_pair_loader needs kind 'pairs', got kind {cfg.kind!r}")
    sampler = sampler if sampler is not None else build_sampler(cfg, g)
    lc = cfg.loader
    batches = SeedBatches(seeds, lc.batch_size, shuffle=lc.shuffle, drop_last=lc.drop_last, seed=cfg.seed,
                          rank=rank, world_size=world_size)
    ds = NeighborPairDataset(sampler, batches, seed=cfg.seed, hard_curriculum=cfg.pairs.hard_curriculum)
    return NeighborPairLoader(ds, lc.num_workers, persistent_workers=lc.persistent_workers)
