"""Helper of test_loader.py (run as a fresh process): worker memory with a memory-mapped store.

    python rss_probe.py STORE_DIR OUT.json

Iterates a ``NeighborPairLoader`` over the store with 1 and 3 forked workers, 1 spawned worker,
and a negative control (forked workers that copy the CSR, as a careless dataset would), and
writes, per run and per worker: USS (unique set size) right after the worker started and after it
sampled its batches, and the private (copied) bytes of the store's mapped files.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import torch
from torch.utils.data import get_worker_info

from graph import PinBoardGraph
from sampling import NeighborPairDataset, NeighborPairLoader, NeighborPairSampler, SeedBatches

STORE_FILES = ("pin_indptr.npy", "pin_indices.npy", "board_indptr.npy", "board_indices.npy")


def measure() -> dict:
    proc = psutil.Process()
    info = proc.memory_full_info()
    store_dirty = store_private = dirty = 0
    for m in proc.memory_maps(grouped=True):
        dirty += m.private_dirty
        if Path(m.path).name in STORE_FILES:
            store_dirty += m.private_dirty
            store_private += m.private_clean + m.private_dirty
    # USS counts clean page-cache pages of the store that only this process maps (shared with
    # nobody *yet*, not copies); "private_dirty" is memory this process wrote: copies, heap.
    return {"pid": os.getpid(), "uss": info.uss, "rss": info.rss, "private_dirty": dirty,
            "store_private_dirty": store_dirty, "store_private": store_private}


START: dict = {}


def init_worker(_: int) -> None:
    START.update(measure())


class Probe(NeighborPairDataset):
    copy_csr = False

    def __getitem__(self, key):
        if self.copy_csr and not getattr(self, "_copied", False):
            g = self.sampler.graph
            for adj in (g.pins, g.boards):
                adj.indptr = adj.indptr.clone()
                adj.indices = adj.indices.clone()
            self._copied = True
        item = super().__getitem__(key)
        if get_worker_info() is not None:
            item.mem = {"start": dict(START), "end": measure()}
        return item


def run(sampler, workers: int, context: str, copy_csr: bool = False, batches_per_worker: int = 6) -> dict:
    ds = Probe(sampler, SeedBatches(sampler.graph.num_pins, 128, seed=0), seed=0)
    ds.copy_csr = copy_csr
    loader = NeighborPairLoader(ds, workers, multiprocessing_context=context)
    loader._loader_kwargs["worker_init_fn"] = init_worker
    per_worker: dict = {}
    for i, item in enumerate(loader):
        per_worker[item.mem["end"]["pid"]] = item.mem
        if i + 1 >= batches_per_worker * workers:
            break
    return {"workers": list(per_worker.values())}


def main() -> None:
    store, out = Path(sys.argv[1]), Path(sys.argv[2])
    torch.set_num_threads(1)
    g = PinBoardGraph.open(store)
    csr_bytes = sum(t.numel() * t.element_size() for t in (g.pin_indptr, g.pin_indices, g.board_indptr, g.board_indices))
    sampler = NeighborPairSampler(g, 4, num_random_walks=50, num_negatives=16)
    result = {"csr_bytes": csr_bytes, "parent_uss": psutil.Process().memory_full_info().uss}
    result["fork1"] = run(sampler, 1, "fork")
    result["fork3"] = run(sampler, 3, "fork")
    result["spawn1"] = run(sampler, 1, "spawn", batches_per_worker=2)
    result["copy_control"] = run(sampler, 1, "fork", copy_csr=True, batches_per_worker=2)
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main()
