"""Freezing policies shared by all towers: ``train_all``, ``frozen``, ``train_last_n``.

A tower tells :func:`apply_freeze_policy` which modules are its ordered blocks and which modules
come after the blocks (final norms, pooling heads, mergers): ``train_last_n`` trains the last N
blocks plus those trailing modules, and freezes the embeddings and earlier blocks.
"""
from __future__ import annotations

from typing import Sequence

from torch import nn

__all__ = ["apply_freeze_policy", "FreezableTower", "find_block_list"]


def apply_freeze_policy(root: nn.Module, blocks: Sequence[nn.Module], after_blocks: Sequence[nn.Module],
                        policy: str, unfreeze_last_n: int = 0) -> None:
    """Set ``requires_grad`` on every parameter of ``root`` according to ``policy``."""
    if policy == "train_all":
        root.requires_grad_(True)
        return
    root.requires_grad_(False)
    if policy == "frozen":
        return
    if policy != "train_last_n":
        raise ValueError(f"unknown freeze policy {policy!r} (expected train_all, frozen, train_last_n)")
    if not 0 < unfreeze_last_n <= len(blocks):
        raise ValueError(f"unfreeze_last_n={unfreeze_last_n} but the tower has {len(blocks)} blocks")
    for block in list(blocks)[-unfreeze_last_n:]:
        block.requires_grad_(True)
    for module in after_blocks:
        if module is not None:
            module.requires_grad_(True)


def find_block_list(model: nn.Module, num_layers: int | None = None) -> nn.ModuleList:
    """The ModuleList of transformer layers of a Hugging Face model: the longest ModuleList (with
    ``num_layers`` entries when given). Works for BERT (``encoder.layer``), CLIP/SigLIP
    (``encoder.layers``), Llama-style (``layers``) and Qwen2-VL vision (``blocks``)."""
    best = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if num_layers is not None and len(module) != num_layers:
                continue
            if best is None or len(module) > len(best):
                best = module
    if best is None:
        raise ValueError(f"cannot find the transformer block list of {type(model).__name__}")
    return best


class FreezableTower(nn.Module):
    """Base class of towers: a fully frozen tower stays in eval mode (no dropout, fixed norms) and
    runs without autograd, so its outputs can be cached once per dataset."""

    frozen: bool = False

    def set_freeze(self, policy: str, unfreeze_last_n: int = 0) -> None:
        apply_freeze_policy(self, self.blocks(), self.after_blocks(), policy, unfreeze_last_n)
        self.frozen = policy == "frozen"
        if self.frozen:
            self.eval()

    def blocks(self) -> Sequence[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError

    def after_blocks(self) -> Sequence[nn.Module]:
        return []

    def train(self, mode: bool = True):
        # Why: a frozen tower must produce the same outputs in train and eval so cached features
        # stay valid; dropout in the frozen pretrained encoder would break that.
        return super().train(mode and not self.frozen)
