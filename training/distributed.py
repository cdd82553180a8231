"""Data-parallel training across processes started by ``torchrun`` (gloo on CPU, NCCL on CUDA).

Each rank trains on its shard of the seed pins (``sampling.SeedBatches(rank=, world_size=)``);
the contrastive losses gather the embeddings of all ranks with gradient (``pinclip.distributed``,
open_clip's ``local_loss`` + ``gather_with_grad``), so the mean of the ranks' losses is the loss
of the concatenated batch. After the backward passes of a step the gradients are averaged over
ranks in one flattened all-reduce (:func:`average_gradients`): each rank's feature gradient is
``world_size`` times its share of the single-process gradient, which the average divides back
out. This explicit all-reduce (rather than ``DistributedDataParallel``) lets a step run several
micro-batch passes (gradient accumulation with cached features, where the logit scales take part
in one pass only) with a single exchange and no unused-parameter bookkeeping.

    torchrun --standalone --nproc_per_node 2 -m training train --config demo.yaml --out RUN
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist

from graph.devices import check_device

__all__ = ["DistInfo", "init_distributed", "resolve_device", "barrier", "all_reduce_mean",
           "average_gradients", "broadcast_parameters", "all_gather_object", "parameter_digest",
           "shutdown"]


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0, what: str = "--device") -> torch.device:
    """``auto`` -> CUDA when available (``cuda:LOCAL_RANK``), else CPU; ``cuda`` -> ``cuda:LOCAL_RANK``.
    A string that is no device, or a CUDA device this machine lacks, is a ``graph.devices.DeviceError``
    naming ``what`` (the flag or key the string came from)."""
    device = check_device(name, what, allow_auto=True)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", local_rank)
    return device


def init_distributed(device_name: str = "auto", timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR/PORT); a single process without it. Returns this process's
    :class:`DistInfo`."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank, what="train.device")
    if world_size <= 1:
        return DistInfo(0, 1, 0, device, None)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, device, backend)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def all_reduce_mean(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The mean over ranks of a float tensor (a copy; the input is not modified)."""
    out = values.detach().clone()
    if info.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= info.world_size
    return out


def average_gradients(params: Iterable[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks with one all-reduce of the flattened gradients. A parameter
    without a gradient gets zeros first, so every rank reduces the same layout."""
    if not info.distributed:
        return
    params = [p for p in params if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)


def broadcast_parameters(module: torch.nn.Module, info: DistInfo) -> None:
    """Copy rank 0's parameters and buffers to every rank."""
    if not info.distributed:
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src=0)


def all_gather_object(obj: Any, info: DistInfo) -> list:
    if not info.distributed:
        return [obj]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def parameter_digest(module: torch.nn.Module, trainable_only: bool = True) -> str:
    """sha256 of the (trainable) parameters' bytes: equal on every rank while they stay in sync."""
    h = hashlib.sha256()
    for name, p in module.named_parameters():
        if trainable_only and not p.requires_grad:
            continue
        t = p.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def shutdown(info: DistInfo, synchronize: bool = False) -> None:
    """Destroy the process group. synchronize: first wait at a barrier for every rank (after a
    run that finished on every rank): a rank that tears its gloo connections down while another
    still uses them can make that one abort at exit ("terminate called without an active
    exception", seen on a loaded 2-core machine). Not after an error, where another rank may
    never come."""
    if info.distributed and dist.is_initialized():
        if synchronize:
            dist.barrier()
        dist.destroy_process_group()
