"""Neighbor samplers over the Pin-Board graph: random walks, PinSage and Pixie importance
neighborhoods, k-hop fanout, neighbor-alignment pairs, and a DataLoader-based loader.

Everything runs on the device where the CSR tensors live (``SamplingGraph``) and draws every
random number from an explicit ``torch.Generator``. Ids only: features are fetched by the loader.

    from sampling import random_walk, PinSageSampler
    traces = random_walk(g, seeds, num_hops=4, restart_prob=0.0, generator=None)
    nb = PinSageSampler(g, num_traversals=3, termination_prob=0.5, num_random_walks=200,
                        num_neighbors=10, seed=0).sample(seeds)
"""
from sampling.adjacency import Adjacency, EdgeExclusion, GraphLike, SamplingGraph, as_sampling_graph
from sampling.builder import build_pair_loader, build_sampler
from sampling.config import SamplerConfig, SamplerConfigError, list_sampler_configs, load_sampler_config
from sampling.fanout import BOARD_TO_PIN, PIN_TO_BOARD, FanoutOutput, FanoutSampler
from sampling.loader import (NeighborPairDataset, NeighborPairLoader, PairBatch, SeedBatches,
                             batch_generator)
from sampling.neighborhoods import ImportanceNeighbors
from sampling.pairs import NeighborPairs, NeighborPairSampler, false_negative_mask
from sampling.pinsage import PinSageSampler
from sampling.pixie import PixieSampler
from sampling.protocol import Sampler
from sampling.threads import get_num_threads, set_num_threads
from sampling.walks import RandomWalkSampler, metapath_random_walk, random_walk

__all__ = [
    "Sampler", "random_walk", "metapath_random_walk", "RandomWalkSampler",
    "PinSageSampler", "PixieSampler", "ImportanceNeighbors",
    "FanoutSampler", "FanoutOutput", "PIN_TO_BOARD", "BOARD_TO_PIN",
    "NeighborPairSampler", "NeighborPairs", "false_negative_mask",
    "SeedBatches", "NeighborPairDataset", "NeighborPairLoader", "PairBatch", "batch_generator",
    "SamplingGraph", "Adjacency", "EdgeExclusion", "as_sampling_graph", "GraphLike",
    "SamplerConfig", "SamplerConfigError", "load_sampler_config", "list_sampler_configs",
    "build_sampler", "build_pair_loader", "set_num_threads", "get_num_threads",
]
