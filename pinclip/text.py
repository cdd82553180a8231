"""Text towers: the small from-scratch transformer encoder, and the factory for both kinds.

Both kinds return ``{"tokens": [B, L, W] float, "mask": [B, L] bool, "pooled": [B, W] float}``;
the fusion reads the tokens, the text embedding is projected from ``pooled``.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .config import TextConfig
from .freeze import FreezableTower
from .hf_towers import HFTextTower, pool_text
from .transformer import Transformer

__all__ = ["TextTransformer", "create_text_tower"]


class TextTransformer(FreezableTower):
    """Bidirectional pre-LN transformer encoder over token ids (no causal mask: this is an encoder
    for retrieval, padding is masked out of attention and pooling).

    input_ids, attention_mask: [B, L] long with L <= context_length.
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int,
                 mlp_ratio: float = 4.0, pooling: str = "mean"):
        super().__init__()
        self.width = width
        self.context_length = context_length
        self.pooling = pooling
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_final = nn.LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)

    def blocks(self) -> Sequence[nn.Module]:
        return self.transformer.resblocks

    def after_blocks(self) -> Sequence[nn.Module]:
        return [self.ln_final]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        length = input_ids.shape[1]
        if length > self.context_length:
            raise ValueError(f"text of {length} tokens exceeds context_length {self.context_length}")
        mask = attention_mask.to(torch.bool)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.token_embedding(input_ids) + self.positional_embedding[:length]
            x, _ = self.transformer(x, key_padding_mask=mask)
            tokens = self.ln_final(x)
        return {"tokens": tokens, "mask": mask, "pooled": pool_text(tokens, mask, self.pooling)}


def create_text_tower(cfg: TextConfig, weights: bool = True) -> FreezableTower:
    """Build the text tower of a config and apply its freezing policy. ``weights=False``: a Hugging
    Face tower is built from the ``config.json`` in ``cfg.pretrained``, no weights read."""
    if cfg.type == "hf":
        tower = HFTextTower(cfg.pretrained, pooling=cfg.pooling, weights=weights)
    else:
        tower = TextTransformer(cfg.vocab_size, cfg.context_length, cfg.width, cfg.layers, cfg.heads,
                                cfg.mlp_ratio, cfg.pooling)
    tower.set_freeze(cfg.freeze, cfg.unfreeze_last_n)
    return tower
