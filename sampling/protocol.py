"""``Sampler``: what every sampler of the package offers, whatever it samples.

    from sampling.protocol import Sampler
    def batches(sampler: Sampler[NeighborPairs], seeds): ...
    isinstance(build_sampler(cfg, g), Sampler)      # True for every kind

``sample(seeds, *, generator=None)`` draws for ``seeds`` (int [S] node ids) from ``generator``
(a ``torch.Generator`` on the sampler's device; None: the sampler's own, or torch's default for
``RandomWalkSampler``) and returns the sampler's typed output:

  ==========================  ==========================================================
  ``RandomWalkSampler``       int64 traces [S, 2 * num_hops + 1] (``random_walk``)
  ``PinSageSampler``          ``ImportanceNeighbors``
  ``PixieSampler``            ``ImportanceNeighbors`` (single-pin queries)
  ``FanoutSampler``           ``FanoutOutput``
  ``NeighborPairSampler``     ``NeighborPairs``
  ==========================  ==========================================================

Samplers may take more keyword arguments (``exclude_edges``...), always with defaults.
"""
from __future__ import annotations

from typing import Any, Optional, Protocol, TypeVar, runtime_checkable

import torch

__all__ = ["Sampler"]

Output_co = TypeVar("Output_co", covariant=True)


@runtime_checkable
class Sampler(Protocol[Output_co]):
    """A sampler: ``sample(seeds, *, generator=None)`` -> its typed output (see the module
    docstring). ``isinstance`` checks only that a ``sample`` method exists."""

    def sample(self, seeds: Any, *, generator: Optional[torch.Generator] = None) -> Output_co:
        ...
