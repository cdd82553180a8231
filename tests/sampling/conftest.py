"""Shared graphs and exact random-walk references for the sampler tests."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graph import PinBoardGraph

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def random_graph(num_pins: int, num_boards: int, num_edges: int, seed: int = 0,
                 weights: bool = True, isolated: int = 0) -> PinBoardGraph:
    """A random bipartite graph; the last ``isolated`` pins have no boards."""
    rng = np.random.default_rng(seed)
    pins = rng.integers(0, num_pins - isolated, num_edges)
    boards = rng.integers(0, num_boards, num_edges)
    w = (0.1 + rng.random(num_edges)).astype(np.float32) if weights else None
    return PinBoardGraph.from_edges(pins, boards, num_pins, num_boards, weights=w)


def transition_matrices(g: PinBoardGraph, weighted: bool = False,
                        excluded: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense row-stochastic pin -> board [P, B] and board -> pin [B, P] matrices (float64),
    from the scipy export (an independent path to the CSR); ``excluded``: bool [E] edge mask."""
    a = g.to_scipy("pin").toarray().astype(np.float64)          # [P, B] weights (or 1)
    if not weighted:
        a = (a != 0).astype(np.float64)
    if excluded is not None:
        pins, boards = (t.numpy() for t in g.edges())
        a[pins[excluded], boards[excluded]] = 0.0
    def norm(m: np.ndarray) -> np.ndarray:
        s = m.sum(axis=1, keepdims=True)
        return np.divide(m, s, out=np.zeros_like(m), where=s > 0)
    return norm(a), norm(a.T.copy())


@pytest.fixture(scope="session")
def small_graph() -> PinBoardGraph:
    """60 pins (the last 3 isolated), 12 boards, ~250 distinct weighted edges."""
    return random_graph(60, 12, 300, seed=1, isolated=3)


@pytest.fixture(scope="session")
def medium_graph() -> PinBoardGraph:
    """2000 pins, 200 boards, ~15k weighted edges."""
    return random_graph(2000, 200, 15000, seed=2)


@pytest.fixture(scope="session")
def tiny_graph() -> PinBoardGraph:
    """8 pins, 4 boards, chosen so walks have non-trivial exact distributions; pin 7 isolated.

    boards: 0 = {0, 1, 2}, 1 = {2, 3}, 2 = {3, 4, 5, 6}, 3 = {0, 6}
    """
    pins = [0, 1, 2, 2, 3, 3, 4, 5, 6, 0, 6]
    boards = [0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 3]
    w = [1.0, 2.0, 0.5, 3.0, 1.0, 1.0, 2.0, 1.0, 0.25, 4.0, 1.0]
    return PinBoardGraph.from_edges(pins, boards, 8, 4, weights=w)


@pytest.fixture(scope="session")
def make_graph():
    """The ``random_graph`` builder (test modules cannot import conftest under importlib mode)."""
    return random_graph


@pytest.fixture(scope="session")
def transitions():
    """The ``transition_matrices`` reference."""
    return transition_matrices


def max_z(freq: np.ndarray, prob: np.ndarray, n: int) -> float:
    """Largest |freq - prob| in binomial standard deviations (a floor of 1/n on the variance
    keeps cells with prob 0 meaningful: any hit there is ~sqrt(n) sigmas)."""
    var = np.maximum(prob * (1 - prob), 1.0 / n) / n
    return float(np.max(np.abs(freq - prob) / np.sqrt(var)))


@pytest.fixture(scope="session")
def zscore():
    return max_z
