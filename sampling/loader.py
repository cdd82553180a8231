"""Seed batches and neighbor pairs through ``torch.utils.data.DataLoader`` workers.

Determinism: batch ``b`` of epoch ``e`` on rank ``r`` is computed from nothing but
``(seed, e, b * world_size + r)``: the epoch's seed permutation comes from a CPU generator
seeded with ``(seed, e)``, the batch's samples from a generator seeded with
``(seed, e, b * world_size + r)`` (``batch_generator``). So the samples are the same whatever
the number of workers, whichever worker computes a batch, and after a resume.

Sharding (distributed training): the epoch permutation is padded by wrapping around to a
multiple of ``world_size`` (or cut, with ``drop_last``) and rank ``r`` takes every
``world_size``-th seed from position ``r``, as ``DistributedSampler`` does; every rank gets the
same number of batches.

Memory: the dataset holds the sampler, which holds the CSR tensors. On CPU with a store opened
from disk these are the store's memory maps: forked workers share the pages (nothing writes to
them, so copy-on-write never copies), and workers started with 'spawn' / 'forkserver' re-open
the store by path when they unpickle the ``SamplingGraph``. Sampling on a GPU: use
``num_workers=0`` (CUDA cannot be used in forked workers, and the GPU is fast enough).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from sampling.pairs import NeighborPairSampler, NeighborPairs
from sampling.walks import prepare_seeds

__all__ = ["batch_generator", "SeedBatches", "PairBatch", "NeighborPairDataset", "NeighborPairLoader"]


def _mix(*values: int) -> int:
    """A 63-bit seed from a tuple of integers (numpy SeedSequence hashing)."""
    state = np.random.SeedSequence([int(v) & 0xFFFFFFFFFFFFFFFF for v in values]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def batch_generator(seed: int, epoch: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded from (seed, epoch, index) only."""
    gen = torch.Generator(device=device)
    gen.manual_seed(_mix(seed, epoch, index, 0x5EED))
    return gen


class SeedBatches:
    """The seed batches of each epoch for one rank.

    Args:
      seeds: int [N] the seed pool (pin ids), or an int N meaning ``arange(N)``.
      batch_size: seeds per batch (per rank). shuffle: permute the pool every epoch.
      drop_last: drop the last incomplete batch (and cut the pool, rather than wrap it, to a
        multiple of world_size). seed: the permutation seed. rank, world_size: the shard.
    """

    def __init__(self, seeds: Any, batch_size: int, *, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if isinstance(seeds, int):
            seeds = torch.arange(seeds)
        self.pool = torch.as_tensor(seeds).long().cpu()
        if self.pool.dim() != 1:
            raise ValueError(f"seeds: expected a 1-D tensor of pin ids, got shape {list(self.pool.shape)}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size} must be >= 1")
        if int(world_size) < 1 or not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank={rank}, world_size={world_size}: need 0 <= rank < world_size")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self._cache: tuple[int, torch.Tensor] | None = None

    @property
    def num_per_rank(self) -> int:
        n, w = self.pool.shape[0], self.world_size
        return n // w if self.drop_last else -(-n // w)

    def __len__(self) -> int:
        m = self.num_per_rank
        return m // self.batch_size if self.drop_last else -(-m // self.batch_size)

    def shard(self, epoch: int) -> torch.Tensor:
        """int64 [num_per_rank]: this rank's seeds for ``epoch``, in batch order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        n = self.pool.shape[0]
        if self.shuffle:
            gen = torch.Generator().manual_seed(_mix(self.seed, epoch, 0xE90C))
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        total = self.num_per_rank * self.world_size
        if total > n:  # wrap around (DistributedSampler's padding)
            order = torch.cat([order, order.repeat(-(-(total - n) // max(n, 1)))[: total - n]])
        order = order[:total]
        shard = self.pool[order[self.rank::self.world_size]]
        self._cache = (epoch, shard)
        return shard

    def batch(self, epoch: int, index: int) -> torch.Tensor:
        """int64 [<= batch_size]: the seeds of batch ``index`` of ``epoch``."""
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range: this rank has {len(self)} batches per epoch")
        return self.shard(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

    def global_index(self, index: int) -> int:
        return index * self.world_size + self.rank


@dataclass
class PairBatch:
    """One loader item: ``pairs`` for batch ``index`` of ``epoch`` (``pairs.seeds`` = its seeds)."""

    epoch: int
    index: int
    pairs: NeighborPairs


class NeighborPairDataset(Dataset):
    """Map-style dataset whose item ``(epoch, index)`` is a ``PairBatch``.

    Items are keyed by (epoch, index) rather than by index alone, so persistent workers need no
    epoch broadcast. ``hard_curriculum``: the number of hard negatives grows by one per epoch
    (epoch 0: none) up to the sampler's ``num_hard_negatives`` (PinSage's curriculum).
    """

    def __init__(self, sampler: NeighborPairSampler, batches: SeedBatches, seed: int = 0,
                 hard_curriculum: bool = False) -> None:
        self.sampler = sampler
        self.batches = batches
        self.seed = int(seed)
        self.hard_curriculum = bool(hard_curriculum)
        prepare_seeds(batches.pool, sampler.graph.num_pins, torch.device("cpu"), "seed pool")

    def __len__(self) -> int:
        return len(self.batches)

    def num_hard_negatives(self, epoch: int) -> int:
        h = self.sampler.num_hard_negatives
        return min(h, epoch) if self.hard_curriculum else h

    def __getitem__(self, key: tuple[int, int]) -> PairBatch:
        epoch, index = (int(v) for v in key)
        seeds = self.batches.batch(epoch, index).to(self.sampler.device)
        gen = batch_generator(self.seed, epoch, self.batches.global_index(index), self.sampler.device)
        pairs = self.sampler.sample(seeds, generator=gen, num_hard_negatives=self.num_hard_negatives(epoch))
        return PairBatch(epoch, index, pairs)


def _identity(x: Any) -> Any:
    return x


class NeighborPairLoader:
    """Iterate ``PairBatch`` items of successive epochs through a ``DataLoader``, resumable.

    ``iter(loader)`` runs the rest of the current epoch (from the resume position) and then
    advances to the next epoch. ``state_dict()`` records the position after the last batch
    *yielded* (not merely prefetched by workers); ``load_state_dict`` resumes exactly there.

    Args:
      dataset: a ``NeighborPairDataset``. num_workers, prefetch_factor, persistent_workers,
      multiprocessing_context, pin_memory: passed to ``DataLoader``.
    """

    def __init__(self, dataset: NeighborPairDataset, num_workers: int = 0, *, prefetch_factor: int | None = None,
                 persistent_workers: bool = False, multiprocessing_context: Any = None,
                 pin_memory: bool = False) -> None:
        if num_workers > 0 and dataset.sampler.device.type != "cpu":
            raise ValueError(f"num_workers={num_workers} with sampling on {dataset.sampler.device}: "
                             "sample on the GPU in the main process (num_workers=0)")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self._loader_kwargs = dict(num_workers=self.num_workers, persistent_workers=persistent_workers and num_workers > 0,
                                   multiprocessing_context=multiprocessing_context, pin_memory=pin_memory)
        if num_workers > 0 and prefetch_factor is not None:
            self._loader_kwargs["prefetch_factor"] = prefetch_factor
        self.epoch = 0
        self.next_index = 0

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.next_index = int(epoch), 0

    def __iter__(self) -> Iterator[PairBatch]:
        n = len(self.dataset)
        keys = [(self.epoch, i) for i in range(self.next_index, n)]
        if keys:
            loader = DataLoader(self.dataset, batch_size=None, sampler=keys, collate_fn=_identity,
                                **self._loader_kwargs)
            for item in loader:
                self.next_index = item.index + 1
                yield item
        self.epoch += 1
        self.next_index = 0

    def state_dict(self) -> dict[str, Any]:
        b = self.dataset.batches
        return {"epoch": self.epoch, "next_index": self.next_index, "seed": self.dataset.seed,
                "shuffle_seed": b.seed, "rank": b.rank, "world_size": b.world_size,
                "batch_size": b.batch_size, "num_seeds": int(b.pool.shape[0])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        b = self.dataset.batches
        mine = self.state_dict()
        for key in ("seed", "shuffle_seed", "world_size", "batch_size", "num_seeds", "rank"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"loader state: {key}={state[key]} but this loader has {key}={mine[key]}; "
                                 "resuming would not reproduce the same batches")
        if not 0 <= int(state["next_index"]) <= len(b):
            raise ValueError(f"loader state: next_index={state['next_index']} out of range [0, {len(b)}]")
        self.epoch = int(state["epoch"])
        self.next_index = int(state["next_index"])
