"""Compiled CPU kernels of the fanout sampler's default path (numba), equal to the torch code.

The uniform, without-replacement fanout hop and the relabeling, written as loops and compiled
by numba (``cache=True``: compiled once per machine, then loaded from ``__pycache__``). Why: the
vectorized torch path is over 100 small torch operations per [10, 5] call (cProfile), each with a few microseconds of fixed
cost each, which left it on par with DGL's sampler on two threads (benchmarks/RESULTS.md,
"Fanout"); one loop per hop has no such cost.

Both kernels give exactly what the torch code gives: the hop kernel consumes the same uniforms
(one [k, n_big] float64 tensor from the sampler's ``torch.Generator``, ``n_big`` the nodes with
more than k edges, in node order) with the same Floyd steps and returns ranks sorted per node; the
relabel kernel numbers unseen ids in order of first appearance in the same int32 table
(``sampling.relabel.DenseNodeMap``). ``tests/sampling/test_fanout.py`` checks the two paths
against each other. Without numba (``available()`` False) the sampler runs the torch code. numba is imported on the
first call, not with ``sampling``.
"""
from __future__ import annotations

import functools
import sys
from types import SimpleNamespace

import numpy as np
import torch

from graph.numba_jit import jit_kernels

__all__ = ["available", "set_enabled", "runs_on", "count_over", "uniform_hop", "relabel", "reset"]

_ENABLED = True


@functools.lru_cache(maxsize=None)
def _compiled() -> SimpleNamespace | None:
    """The compiled kernels, made on first use; None without numba (the torch path then runs)."""
    return jit_kernels(sys.modules[__name__], ("_count_over", "_uniform_hop", "_relabel", "_reset"))


def available() -> bool:
    """Whether the compiled kernels can run here (imports numba on the first call)."""
    return _compiled() is not None


def set_enabled(on: bool) -> None:
    """Use the compiled kernels where they apply (default), or the torch code everywhere
    (``False``; both give the same samples)."""
    global _ENABLED
    _ENABLED = bool(on)


def runs_on(device: torch.device) -> bool:
    """Whether the samplers use the compiled kernels for work on ``device``: CPU, enabled, numba
    importable."""
    return device.type == "cpu" and _ENABLED and available()

_UNSEEN = np.iinfo(np.int32).max
_SEEN_BASE = np.iinfo(np.int32).min


def _count_over(indptr, nodes, k):  # pragma: no cover - compiled
    """Number of ``nodes`` (int64 [m]) with more than ``k`` edges in ``indptr`` (int64 [N + 1])."""
    n = 0
    for i in range(nodes.shape[0]):
        if indptr[nodes[i] + 1] - indptr[nodes[i]] > k:
            n += 1
    return n


def _uniform_hop(indptr, nodes, k, u):  # pragma: no cover - compiled; tested through the sampler
    """indptr int64 [N + 1]; nodes int64 [m]; u float64 [k, n_big]. Returns (positions int64
    [M], owner int64 [M]): up to k CSR positions per node, ascending, grouped by node."""
    m = nodes.shape[0]
    total = 0
    for i in range(m):
        total += min(indptr[nodes[i] + 1] - indptr[nodes[i]], k)
    pos = np.empty(total, np.int64)
    owner = np.empty(total, np.int64)
    chosen = np.empty(k, np.int64)
    o = 0
    b = 0
    for i in range(m):
        s = indptr[nodes[i]]
        d = indptr[nodes[i] + 1] - s
        if d <= k:
            for r in range(d):
                pos[o + r] = s + r
                owner[o + r] = i
            o += d
            continue
        for t in range(k):                        # Floyd: a uniform k-subset of [0, d)
            j = d - k + t
            x = np.int64(u[t, b] * (j + 1))
            for c in range(t):
                if chosen[c] == x:
                    x = j
                    break
            chosen[t] = x
        b += 1
        for t in range(1, k):                     # insertion sort: k is small
            x = chosen[t]
            c = t - 1
            while c >= 0 and chosen[c] > x:
                chosen[c + 1] = chosen[c]
                c -= 1
            chosen[c + 1] = x
        for t in range(k):
            pos[o + t] = s + chosen[t]
            owner[o + t] = i
        o += k
    return pos, owner


def _relabel(table, cand, n_old):  # pragma: no cover - compiled; tested through the sampler
    """table int32 [N] (``DenseNodeMap``'s); cand int64 [n]; n_old: local ids so far. Returns
    (local int64 [n], new global ids int64 [a]) and marks the new ids seen in ``table``."""
    n = cand.shape[0]
    local = np.empty(n, np.int64)
    new = np.empty(n, np.int64)
    a = 0
    for i in range(n):
        c = cand[i]
        v = table[c]
        if v == _UNSEEN:
            table[c] = _SEEN_BASE + n_old + a
            new[a] = c
            local[i] = n_old + a
            a += 1
        else:
            local[i] = np.int64(v) - _SEEN_BASE
    return local, new[:a].copy()


def _reset(table, ids):  # pragma: no cover - compiled
    """``table[ids] = UNSEEN`` (a loop: torch's ``index_fill_`` costs 5x as much here)."""
    for i in range(ids.shape[0]):
        table[ids[i]] = _UNSEEN


def count_over(indptr, nodes, k):
    """Compiled ``_count_over`` (see there)."""
    return _compiled().count_over(indptr, nodes, k)


def uniform_hop(indptr, nodes, k, u):
    """Compiled ``_uniform_hop`` (see there)."""
    return _compiled().uniform_hop(indptr, nodes, k, u)


def relabel(table, cand, n_old):
    """Compiled ``_relabel`` (see there)."""
    return _compiled().relabel(table, cand, n_old)


def reset(table, ids):
    """Compiled ``_reset`` (see there)."""
    return _compiled().reset(table, ids)
