"""Bipartite Pin-Board graph store: CSR both ways, memory-mapped, splits, features.

``graph`` depends on no other package of the toolkit. The public names below are imported on
first use (PEP 562), so importing a light submodule such as ``graph.errors`` (which the CLI does
before parsing arguments) does not import torch and pyarrow: ``pinclip --help`` stays fast.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "PinBoardGraph": "graph.store",
    "GraphStoreError": "graph.storage",
    "GraphSplits": "graph.splits",
    "make_splits": "graph.splits",
    "FeatureStore": "graph.features",
}

__all__ = ["PinBoardGraph", "GraphStoreError", "GraphSplits", "make_splits", "FeatureStore"]

if TYPE_CHECKING:  # pragma: no cover
    from graph.features import FeatureStore
    from graph.splits import GraphSplits, make_splits
    from graph.storage import GraphStoreError
    from graph.store import PinBoardGraph


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'graph' has no attribute {name!r}")
