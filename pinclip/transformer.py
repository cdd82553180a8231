"""Transformer building blocks shared by the scratch ViT, the scratch text tower and the fusion.

Every attention goes through ``torch.nn.functional.scaled_dot_product_attention`` so that the
fused kernels (flash / memory-efficient on CUDA, the fused CPU kernel otherwise) are used.
Blocks are pre-LayerNorm, as in open_clip's ``ResidualAttentionBlock``.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

__all__ = ["Attention", "Mlp", "ResidualAttentionBlock", "CrossAttentionBlock", "Transformer",
           "masked_mean"]


def _sdpa_mask(key_padding_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, L] bool (True = attend) -> [B, 1, 1, L] bool mask broadcast over heads and queries."""
    if key_padding_mask is None:
        return None
    return key_padding_mask[:, None, None, :].to(torch.bool)


class Attention(nn.Module):
    """Multi-head attention; self-attention when ``context`` is None, cross-attention otherwise.

    x: [B, Lq, dim] float; context: [B, Lk, dim]; key_padding_mask: [B, Lk] bool, True = real token.
    Returns [B, Lq, dim].
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} does not divide by heads {heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, lq, d = x.shape
        lk = context.shape[1]
        h = self.heads
        q = self.q(x).view(b, lq, h, d // h).transpose(1, 2)
        k, v = self.kv(context).view(b, lk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=_sdpa_mask(key_padding_mask, q.dtype),
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(out.transpose(1, 2).reshape(b, lq, d))


class Mlp(nn.Sequential):
    def __init__(self, dim: int, mlp_ratio: float = 4.0):
        hidden = int(dim * mlp_ratio)
        super().__init__(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))


class ResidualAttentionBlock(nn.Module):
    """Pre-LN self-attention block: x + attn(ln(x)), then x + mlp(ln(x)). x: [B, L, dim]."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), key_padding_mask=key_padding_mask)
        return x + self.mlp(self.ln_2(x))


class CrossAttentionBlock(nn.Module):
    """Query tokens read a context (cross-attention), talk to each other (self-attention), then MLP.

    queries: [B, Q, dim]; context: [B, L, dim]; context_mask: [B, L] bool (True = real token).
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 2.0):
        super().__init__()
        self.ln_q = nn.LayerNorm(dim)
        self.ln_kv = nn.LayerNorm(dim)
        self.cross = Attention(dim, heads)
        self.ln_self = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, heads)
        self.ln_mlp = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, queries: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        queries = queries + self.cross(self.ln_q(queries), self.ln_kv(context), context_mask)
        queries = queries + self.self_attn(self.ln_self(queries))
        return queries + self.mlp(self.ln_mlp(queries))


class Transformer(nn.Module):
    """A stack of :class:`ResidualAttentionBlock`; ``resblocks`` is what freezing policies act on.
    ``grad_checkpointing``: in training, each block's activations are recomputed in the backward
    pass instead of stored (``torch.utils.checkpoint``, non-reentrant)."""

    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.width = width
        self.grad_checkpointing = False
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                return_layers: Iterable[int] = ()) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """x: [B, L, width]. ``return_layers``: 1-based block indices whose outputs are returned.

        Returns (output of the last block [B, L, width], {layer: [B, L, width]})."""
        wanted = set(return_layers)
        taken: dict[int, torch.Tensor] = {}
        recompute = self.grad_checkpointing and self.training and torch.is_grad_enabled()
        for i, block in enumerate(self.resblocks, start=1):
            if recompute:
                x = torch.utils.checkpoint.checkpoint(block, x, key_padding_mask, use_reentrant=False)
            else:
                x = block(x, key_padding_mask)
            if i in wanted:
                taken[i] = x
        return x, taken


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real tokens. tokens: [B, L, W] float; mask: [B, L] bool/int (1 = real) -> [B, W]."""
    if mask is None:
        return tokens.mean(dim=1)
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)
