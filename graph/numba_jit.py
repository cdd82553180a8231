"""Kernels written as plain Python and compiled by numba on first use.

Shared by the compiled graph build (``graph.csr_kernels``) and the fanout sampler's kernels
(``sampling.fanout_kernels``). Importing numba costs 0.2-0.3 s, so neither ``import graph`` nor
``import sampling`` pays it; ``cache=True`` compiles each kernel once per machine and then
loads it from ``__pycache__``. Without numba the callers run their numpy or torch paths, which
give the same results.
"""
from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Sequence

__all__ = ["jit_kernels"]


def jit_kernels(module: ModuleType, kernels: Sequence[str], helpers: Sequence[str] = ()) -> SimpleNamespace | None:
    """The functions ``module.<name>`` of ``kernels`` compiled (``numba.njit(cache=True,
    nogil=True)``: the GIL is released, so threads run them side by side), as attributes named
    without a leading underscore; None when numba does not import.

    ``helpers``: functions the kernels call through ``module``'s globals; each is replaced there
    by its compiled version first, as a compiled kernel can only call compiled functions."""
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency; a broken install falls back
        return None
    jit = numba.njit(cache=True, nogil=True)
    for name in helpers:
        setattr(module, name, jit(getattr(module, name)))
    return SimpleNamespace(**{name.lstrip("_"): jit(getattr(module, name)) for name in kernels})
