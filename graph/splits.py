"""Deterministic, persisted edge splits and the cold-start split of fresh pins.

``edge_split`` is int8 [E] in edge-id (pin-major CSR) order: 0 train, 1 validation, 2 test,
3 cold-start (an edge of a fresh pin: hidden from training, and so is every other edge of that
pin). Held-out (val/test) edges are drawn only among warm pins with at least two edges, and
every warm pin keeps at least one training edge, so held-out edges test link prediction rather
than cold start.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from graph import storage
from graph.csr import expand_indptr
from graph.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from graph.store import PinBoardGraph

TRAIN, VAL, TEST, COLD = 0, 1, 2, 3
SPLIT_NAMES = {TRAIN: "train", VAL: "val", TEST: "test", COLD: "cold_start"}


@dataclass
class GraphSplits:
    """edge_split int8 [E]; cold_start_pins int64 [C] sorted; params: how they were drawn."""

    edge_split: np.ndarray
    cold_start_pins: np.ndarray
    params: dict[str, Any]

    def mask(self, split: int) -> np.ndarray:
        return np.asarray(self.edge_split) == split

    def train_edge_mask(self) -> np.ndarray:
        return self.mask(TRAIN)

    def is_cold_start(self, num_pins: int) -> torch.Tensor:
        """bool [P]: True for fresh (cold-start) pins."""
        out = torch.zeros(num_pins, dtype=torch.bool)
        out[torch.from_numpy(np.asarray(self.cold_start_pins, dtype=np.int64))] = True
        return out

    def counts(self) -> dict[str, int]:
        c = np.bincount(np.asarray(self.edge_split, dtype=np.int64), minlength=4)
        out = {SPLIT_NAMES[i]: int(c[i]) for i in range(4)}
        out["cold_start_pins"] = int(len(self.cold_start_pins))
        return out

    def write_into(self, directory: Path) -> dict[str, Any]:
        return {
            "params": self.params,
            "counts": self.counts(),
            "arrays": {
                "edge_split": storage.write_array(directory, "split_edge", np.asarray(self.edge_split, np.int8)),
                "cold_start_pins": storage.write_array(directory, "split_cold_start_pins",
                                                       np.asarray(self.cold_start_pins, np.int64)),
            },
        }

    @classmethod
    def open(cls, directory: Path, rec: dict[str, Any], verify: str) -> "GraphSplits":
        arrays = {k: storage.open_array(directory, r, verify) for k, r in rec["arrays"].items()}
        return cls(arrays["edge_split"], arrays["cold_start_pins"], rec.get("params", {}))


def make_splits(g: "PinBoardGraph", val_fraction: float = 0.05, test_fraction: float = 0.05,
                cold_start_fraction: float = 0.1, seed: int = 0,
                fresh_pins: Any = None) -> GraphSplits:
    """Draw the splits of ``g`` deterministically from ``seed``.

    Args:
      val_fraction, test_fraction: share of held-out edges among the eligible ones (edges of warm
        pins with >= 2 edges; each such pin keeps at least one training edge).
      cold_start_fraction: share of pins (with at least one edge) made cold-start, used only
        when ``fresh_pins`` is None.
      fresh_pins: bool [P] or int ids of pins flagged fresh in the dataset; they become the
        cold-start pins.
    """
    for name, v in (("val_fraction", val_fraction), ("test_fraction", test_fraction),
                    ("cold_start_fraction", cold_start_fraction)):
        if not 0.0 <= v < 1.0:
            raise InputError(f"{name}={v} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be < 1")
    rng = np.random.default_rng(seed)
    P, E = g.num_pins, g.num_edges
    indptr = np.asarray(g.csr_numpy().pin_indptr)
    degree = np.diff(indptr)

    if fresh_pins is not None:
        fresh = torch.as_tensor(fresh_pins).cpu().numpy()
        if fresh.dtype == bool:
            if fresh.shape != (P,):
                raise InputError(f"fresh_pins: expected bool [{P}], got shape {fresh.shape}")
            cold = np.flatnonzero(fresh)
        else:
            cold = np.unique(fresh.astype(np.int64))
            if cold.size and (cold[0] < 0 or cold[-1] >= P):
                raise InputError(f"fresh_pins: ids must be in [0, {P})")
        source = "fresh_flag"
    else:
        candidates = np.flatnonzero(degree > 0)
        k = int(round(cold_start_fraction * candidates.size))
        cold = np.sort(rng.choice(candidates, size=k, replace=False)) if k else np.zeros(0, np.int64)
        source = "random"

    edge_pin = expand_indptr(indptr)
    is_cold_pin = np.zeros(P, dtype=bool)
    is_cold_pin[cold] = True
    split = np.zeros(E, dtype=np.int8)
    u = rng.random(E)
    # Held-out edges only on warm pins with >= 2 edges; each keeps its max-u edge for training.
    # The max-u edge is held out only when every edge of the pin was drawn held-out, so forcing
    # it back to train changes the fractions as little as possible (keeping the min-u edge, the
    # one most likely drawn into VAL, took most val edges of low-degree pins back to train).
    eligible = (~is_cold_pin[edge_pin]) & (degree[edge_pin] >= 2)
    split[eligible & (u < val_fraction)] = VAL
    split[eligible & (u >= val_fraction) & (u < val_fraction + test_fraction)] = TEST
    if E:
        starts = indptr[:-1][degree > 0]
        max_u = np.maximum.reduceat(u, starts)
        keep = np.full(P, -1.0, dtype=np.float64)
        keep[degree > 0] = max_u
        split[(u == keep[edge_pin]) & ~is_cold_pin[edge_pin]] = TRAIN
    split[is_cold_pin[edge_pin]] = COLD
    params = {"val_fraction": val_fraction, "test_fraction": test_fraction,
              "cold_start_fraction": cold_start_fraction, "seed": seed, "cold_start_source": source}
    return GraphSplits(split, cold.astype(np.int64), params)
