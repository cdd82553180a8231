"""Gathering features across ranks for contrastive losses (open_clip's ``gather_features``).

``gather_with_grad``: every rank gets the concatenation of all ranks' features and gradients flow
back to the rank that produced each slice (the backward sums the gradient of every rank's loss, an
all-reduce, then keeps the local slice). With open_clip's ``local_loss`` each rank then scores only
its own rows against all columns; the mean of the ranks' losses equals the loss of one process on
the concatenated batch, and each rank's feature gradient is ``world_size`` times the single-process
gradient, which DDP's gradient averaging divides back out.

All ranks must pass the same batch size (use ``drop_last``); nothing here pads.
"""
from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["world_info", "gather_features", "all_gather_no_grad", "GatherWithGrad"]


def world_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size): the given values, else the default process group's, else (0, 1)."""
    initialized = dist.is_available() and dist.is_initialized()
    if rank is None:
        rank = dist.get_rank() if initialized else 0
    if world_size is None:
        world_size = dist.get_world_size() if initialized else 1
    return rank, world_size


class GatherWithGrad(torch.autograd.Function):
    """[N, ...] on each rank -> [world_size * N, ...] (rank order), differentiable."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.rank, ctx.world_size, ctx.n = dist.get_rank(), dist.get_world_size(), x.shape[0]
        parts = [torch.empty_like(x) for _ in range(ctx.world_size)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Why all_reduce rather than reduce_scatter: gloo (CPU) has no reduce_scatter; the
        # gradient of the gathered tensor is small (features, not activations).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_no_grad(x: torch.Tensor, world_size: int | None = None) -> torch.Tensor:
    """Concatenate a tensor (ids, masks, weights) from all ranks without autograd."""
    _, world_size = world_info(None, world_size)
    if world_size == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(world_size)]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def gather_features(x: torch.Tensor, gather_with_grad: bool = True, local_loss: bool = True,
                    rank: int | None = None, world_size: int | None = None) -> torch.Tensor:
    """[N, ...] local features -> [world_size * N, ...] features of all ranks, in rank order.

    Without ``gather_with_grad`` the gathered copy carries no gradient; unless ``local_loss``, the
    local slice is put back so that gradients still reach this rank's features (open_clip).
    """
    rank, world_size = world_info(rank, world_size)
    if world_size == 1:
        return x
    if gather_with_grad:
        return GatherWithGrad.apply(x)
    with torch.no_grad():
        gathered = list(all_gather_no_grad(x, world_size).chunk(world_size, dim=0))
    if not local_loss:
        gathered[rank] = x
    return torch.cat(gathered, dim=0)
