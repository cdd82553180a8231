"""Global -> local node ids of a sampled subgraph, in order of first appearance (relabeling).

A fanout call meets its nodes hop by hop and numbers them 0, 1, ... in the order they first
appear (PyG's and DGL's convention). Two bookkeepings give identical numbers:

  * ``DenseNodeMap`` (the default): an int32 [N] table over the whole id space, owned by the
    sampler and reused across calls (only the entries a call touched are reset afterwards). Each
    ``add`` is a handful of gathers and scatters, the same torch code on every device, and
    deterministic (first appearance is found with ``scatter_reduce(amin)``, not with racing
    writes). It costs 4 bytes per node of that type per sampler (1M pins: 4 MB), allocated on the
    sampler's first call (never pickled to workers).
  * ``SortedNodeSet``: a sorted array of the ids seen so far, O(sampled) memory, for id spaces
    too large for a table (more than ``DENSE_MAP_MAX_NODES`` nodes of a type). On CPU its
    bookkeeping is numpy on packed int64 keys ``id << 32 | local`` (one SIMD sort where torch
    would need several sorts and argsorts).

Both expose ``ids`` (int64 [n]: the global id of every local id so far) and ``add(cand)``.
"""
from __future__ import annotations

import numpy as np
import torch

from sampling import fanout_kernels

__all__ = ["DenseNodeMap", "SortedNodeSet", "DENSE_MAP_MAX_NODES", "NodeIds", "new_node_ids"]

# Above this many nodes of one type a sampler keeps a sorted set instead of a table (2^26 ids:
# a 256 MB int32 table per sampler and worker process).
DENSE_MAP_MAX_NODES = 1 << 26

_UNSEEN = torch.iinfo(torch.int32).max
_SEEN_BASE = torch.iinfo(torch.int32).min


class DenseNodeMap:
    """Relabeling through a reusable int32 [N] table (see the module docstring).

    Between calls every entry is ``_UNSEEN`` (int32 max); during a call a seen node's entry is
    its local id plus ``_SEEN_BASE`` (-2^31), below every position marker, so that one
    ``scatter_reduce(amin)`` of candidate positions marks the first occurrence of every unseen
    id and leaves seen ones alone. Call ``start(ids)`` to begin a call, ``add`` per hop,
    ``finish()`` to reset the touched entries.
    """

    def __init__(self, num_nodes: int, device: torch.device) -> None:
        self.table = torch.full((int(num_nodes),), _UNSEEN, dtype=torch.int32, device=device)
        self._chunks: list[torch.Tensor] = []     # the global ids, one tensor per start / add
        self._n = 0
        self.busy = False

    def __len__(self) -> int:
        return self._n

    @property
    def ids(self) -> torch.Tensor:
        """int64 [n]: the global id of every local id so far (concatenated once, on demand)."""
        if len(self._chunks) != 1:
            self._chunks = [torch.cat(self._chunks) if self._chunks
                            else torch.zeros(0, dtype=torch.int64, device=self.table.device)]
        return self._chunks[0]

    def start(self, ids: torch.Tensor) -> torch.Tensor:
        """Begin a call with ``ids`` (int64 [n], duplicates allowed) as local ids 0 .. n-1.

        Returns int64 [n]: the local id each of ``ids`` maps to (its first occurrence's).
        """
        self.busy = True
        self._chunks, self._n = [ids], ids.shape[0]
        if ids.shape[0] == 0:
            return ids.clone()
        ar = torch.arange(_SEEN_BASE, _SEEN_BASE + ids.shape[0], dtype=torch.int32, device=ids.device)
        self.table.scatter_reduce_(0, ids, ar, "amin")      # a repeated id keeps its first position
        return self.table.index_select(0, ids).long() - _SEEN_BASE

    def add(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local ids of ``cand`` (int64 [n]), appending the unseen ones in order of first
        appearance. Returns (local int64 [n], new global ids int64 [a])."""
        n = cand.shape[0]
        if n == 0:
            return cand.clone(), cand.clone()
        table = self.table
        if fanout_kernels.runs_on(table.device):
            local_np, new_np = fanout_kernels.relabel(table.numpy(), cand.numpy(), self._n)
            new = torch.from_numpy(new_np)
            self._chunks.append(new)
            self._n += new.shape[0]
            return torch.from_numpy(local_np), new
        pos = torch.arange(n, dtype=torch.int32, device=cand.device)
        table.scatter_reduce_(0, cand, pos, "amin")   # unseen ids: position of first occurrence
        new = cand.masked_select(table.index_select(0, cand) == pos)
        n_old = self._n
        table.index_copy_(0, new, torch.arange(_SEEN_BASE + n_old, _SEEN_BASE + n_old + new.shape[0],
                                                dtype=torch.int32, device=cand.device))
        local = table.index_select(0, cand).long() - _SEEN_BASE
        self._chunks.append(new)
        self._n += new.shape[0]
        return local, new

    def finish(self) -> None:
        """Reset the entries this call touched (the table is all ``_UNSEEN`` again)."""
        compiled = fanout_kernels.runs_on(self.table.device)
        for chunk in self._chunks:
            if compiled:
                fanout_kernels.reset(self.table.numpy(), chunk.numpy())
            elif chunk.numel():
                self.table.index_fill_(0, chunk, _UNSEEN)
        self._chunks, self._n = [], 0
        self.busy = False


class SortedNodeSet:
    """Relabeling through a sorted set of the ids seen (for id spaces too large for a table).

    On CPU the bookkeeping is numpy on packed int64 keys ``id << 32 | local`` (one SIMD sort
    where torch would need several sorts and argsorts); elsewhere torch sorts.
    """

    _SHIFT = 32

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids = ids
        self.numpy = ids.device.type == "cpu"
        if self.numpy:
            a = ids.numpy()
            if a.size and int(a.max()) >= 2**31:
                self.numpy = False
            else:
                self._keys = np.sort((a << self._SHIFT) | np.arange(a.size, dtype=np.int64))
        if not self.numpy:
            self._sort()

    def _sort(self) -> None:
        self.sorted_ids, self.sorted_local = torch.sort(self.ids, stable=True)

    def add(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Local ids of ``cand`` (int64 [n]), appending the unseen ones. Returns (local int64 [n],
        new global ids int64 [a])."""
        if self.numpy:
            local, new = self._add_numpy(cand.numpy())
            return torch.from_numpy(local), torch.from_numpy(new)
        return self._add_torch(cand)

    def _add_numpy(self, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sh = self._SHIFT
        keys = self._keys
        n_old = self.ids.shape[0]
        local = np.empty(c.shape[0], dtype=np.int64)
        if keys.size:
            pos = np.searchsorted(keys, c << sh).clip(max=keys.size - 1)
            hit = keys[pos]
            found = (hit >> sh) == c
            local[found] = hit[found] & ((1 << sh) - 1)
        else:
            found = np.zeros(c.shape[0], dtype=bool)
        miss = np.flatnonzero(~found)
        if miss.size == 0:
            return local, np.zeros(0, dtype=np.int64)
        m = c[miss]
        k = m.size
        ks = np.sort(m * k + np.arange(k, dtype=np.int64))      # (id, position) pairs, sorted
        ids_sorted, pos_sorted = ks // k, ks % k
        group_start = np.empty(k, dtype=bool)
        group_start[0] = True
        np.not_equal(ids_sorted[1:], ids_sorted[:-1], out=group_start[1:])
        first = pos_sorted[group_start]                          # first position of each new id
        is_first = np.zeros(k, dtype=bool)
        is_first[first] = True
        rank = np.cumsum(is_first) - 1                           # order of first appearance
        group = np.cumsum(group_start) - 1
        local_m = np.empty(k, dtype=np.int64)
        local_m[pos_sorted] = n_old + rank[first[group]]
        local[miss] = local_m
        new = m[is_first]
        if new.size and int(new.max()) >= 2**31:  # pragma: no cover - ids beyond 2^31: torch path
            raise OverflowError("node ids beyond 2^31 need the torch path")
        self.ids = torch.cat([self.ids, torch.from_numpy(new)])
        self._keys = np.sort(np.concatenate([keys, (new << sh) | np.arange(n_old, n_old + new.size, dtype=np.int64)]))
        return local, new

    def _add_torch(self, cand: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n_old = self.ids.shape[0]
        local = torch.empty_like(cand)
        if n_old:
            pos = torch.searchsorted(self.sorted_ids, cand).clamp(max=n_old - 1)
            found = self.sorted_ids[pos] == cand
            local[found] = self.sorted_local[pos[found]]
        else:
            found = torch.zeros_like(cand, dtype=torch.bool)
        missing = (~found).nonzero().flatten()
        if missing.numel() == 0:
            return local, cand[:0]
        c = cand[missing]
        uniq, inv = torch.unique(c, return_inverse=True)
        first = torch.full((uniq.shape[0],), c.shape[0], dtype=torch.int64, device=c.device)
        first.scatter_reduce_(0, inv, torch.arange(c.shape[0], device=c.device), reduce="amin")
        order = torch.argsort(first)                     # new ids in order of first appearance
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.shape[0], device=c.device)
        local[missing] = n_old + rank[inv]
        new = uniq[order]
        self.ids = torch.cat([self.ids, new])
        self._sort()
        return local, new


    def start(self, ids: torch.Tensor) -> torch.Tensor:  # noqa: D102 - as DenseNodeMap.start
        self.__init__(ids)
        return self.add(ids)[0]

    def finish(self) -> None:
        pass

    def __len__(self) -> int:
        return int(self.ids.shape[0])


NodeIds = DenseNodeMap | SortedNodeSet


def new_node_ids(num_nodes: int, device: torch.device) -> NodeIds:
    """The bookkeeping for ``num_nodes`` ids of one type: a table when it fits, else a sorted set."""
    if num_nodes <= DENSE_MAP_MAX_NODES:
        return DenseNodeMap(num_nodes, device)
    return SortedNodeSet(torch.zeros(0, dtype=torch.int64, device=device))
