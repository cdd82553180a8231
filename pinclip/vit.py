"""From-scratch Vision Transformer (open_clip style) that also returns patch tokens of chosen layers.

All image towers (this one and the Hugging Face ones in :mod:`pinclip.hf_towers`) share one output
contract, :class:`ImageTowerOutput`, which the fusion reads.
"""
from __future__ import annotations

from typing import Iterable, Sequence, TypedDict

import torch
from torch import nn

from .config import resolve_patch_layers
from .freeze import FreezableTower
from .transformer import Transformer

__all__ = ["ImageTowerOutput", "VisionTransformer", "ConvStem", "resolve_layers"]


# ``global``: [B, W] float, the image-level token (CLS after the final norm, or the tower's pooled
# output). ``layers``: {1-based block index: [B, N, W] patch tokens in raster order}.
# ``grid``: (grid_h, grid_w) with grid_h * grid_w == N.
ImageTowerOutput = TypedDict("ImageTowerOutput", {
    "global": torch.Tensor, "layers": dict[int, torch.Tensor], "grid": tuple[int, int]})


def resolve_layers(layers: Iterable[int | str], num_layers: int) -> list[int]:
    """Map 1-based / negative layer indices and depth shares (``"50%"``) to sorted unique 1-based
    indices; -1 is the last block (:func:`pinclip.config.resolve_patch_layers`)."""
    return resolve_patch_layers(layers, num_layers)


class ConvStem(nn.Module):
    """The hybrid ViT's convolutional stem: images [B, 3, H, W] -> tokens [B, width, H / patch,
    W / patch], by log2(patch_size) 3x3 stride-2 convolutions (GroupNorm, GELU), channels
    doubling up to ``width``, then a 1x1 convolution (Xiao et al. 2021). Strokes and components
    smaller than a patch get a convolution's locality, which a single patchify layer lacks."""

    def __init__(self, patch_size: int, width: int):
        super().__init__()
        steps = patch_size.bit_length() - 1  # patch_size is a power of 2
        chans = [3] + [width >> (steps - 1 - i) for i in range(steps)]
        layers: list[nn.Module] = []
        for c_in, c_out in zip(chans, chans[1:]):
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                       nn.GroupNorm(min(8, c_out), c_out), nn.GELU()]
        layers.append(nn.Conv2d(width, width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)


class VisionTransformer(FreezableTower):
    """ViT: patchify (conv, or a convolutional stem: ``stem="conv"``), class token, learned
    positions, pre-LN transformer, final LayerNorm.

    images: [B, 3, image_size, image_size] float (normalized). Width ``width`` is the token width.

    ``readout_grid`` g > 0: the image-level output is the class token concatenated with the last
    block's patch tokens average-pooled to a g x g grid in raster order ([B, W * (1 + g * g)]),
    so it keeps *where* things are in the image. A class token that attends near-uniformly
    averages that away, which is what collapses glyph images (mostly background, a few strokes)
    to one point; flattened grid cells keep the layout, as raw pixels do (issue 16).
    """

    def __init__(self, image_size: int, patch_size: int, width: int, layers: int, heads: int,
                 mlp_ratio: float = 4.0, stem: str = "patch", readout_grid: int = 0):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.patch_size = patch_size
        self.width = width
        self.num_layers = layers
        self.grid_size = (image_size // patch_size, image_size // patch_size)
        if readout_grid < 0 or readout_grid > self.grid_size[0]:
            raise ValueError(f"readout_grid {readout_grid} must lie in [0, {self.grid_size[0]}] (the patch grid)")
        self.readout_grid = readout_grid
        self.global_width = width * (1 + readout_grid * readout_grid)
        n = self.grid_size[0] * self.grid_size[1]
        scale = width ** -0.5
        if stem == "conv":
            self.conv1: nn.Module = ConvStem(patch_size, width)
        elif stem == "patch":
            self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        else:
            raise ValueError(f"stem must be 'patch' or 'conv', got {stem!r}")
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(n + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = nn.LayerNorm(width)

    def blocks(self) -> Sequence[nn.Module]:
        return self.transformer.resblocks

    def after_blocks(self) -> Sequence[nn.Module]:
        return [self.ln_post]

    def forward(self, images: torch.Tensor, layers: Iterable[int] = ()) -> ImageTowerOutput:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of {self.image_size}x{self.image_size} px, got "
                             f"{tuple(images.shape[-2:])}")
        wanted = resolve_layers(layers, self.num_layers)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            x = self.conv1(images)                      # [B, W, gh, gw]
            x = x.flatten(2).transpose(1, 2)            # [B, N, W]
            cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
            x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
            x = self.ln_pre(x)
            x, taken = self.transformer(x, return_layers=wanted)
            global_token = self.ln_post(x[:, 0])
            if self.readout_grid:
                global_token = torch.cat([global_token, self._grid_readout(x[:, 1:])], dim=1)
        return {"global": global_token, "layers": {i: t[:, 1:] for i, t in taken.items()},
                "grid": self.grid_size}

    def _grid_readout(self, patches: torch.Tensor) -> torch.Tensor:
        """patches: [B, N, W] last-block tokens -> [B, g * g * W] (final norm, g x g average pool)."""
        b, _, w = patches.shape
        grid = self.ln_post(patches).transpose(1, 2).reshape(b, w, *self.grid_size)
        pooled = nn.functional.adaptive_avg_pool2d(grid, self.readout_grid)   # [B, W, g, g]
        return pooled.permute(0, 2, 3, 1).reshape(b, -1)
