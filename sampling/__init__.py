"""Neighbor samplers over the Pin-Board graph (random walks, PinSage, Pixie, fanout, pairs)."""
from sampling.adjacency import Adjacency, EdgeExclusion, SamplingGraph, as_sampling_graph
from sampling.neighborhoods import ImportanceNeighbors
from sampling.pinsage import PinSageSampler
from sampling.walks import metapath_random_walk, random_walk

__all__ = ["random_walk", "metapath_random_walk", "PinSageSampler", "ImportanceNeighbors",
           "SamplingGraph", "Adjacency", "EdgeExclusion", "as_sampling_graph"]
