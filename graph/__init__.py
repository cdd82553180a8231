"""Bipartite Pin-Board graph store: CSR both ways, memory-mapped, splits, features.

``graph`` depends on no other package of the toolkit.
"""
from graph.features import FeatureStore
from graph.splits import GraphSplits, make_splits
from graph.storage import GraphStoreError
from graph.store import PinBoardGraph

__all__ = ["PinBoardGraph", "GraphStoreError", "GraphSplits", "make_splits", "FeatureStore"]
