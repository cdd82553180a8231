"""Hybrid fusion at several granularities.

Early fusion: ``num_queries`` learnable query tokens cross-attend to a context made of
  * the global image token                       (1 token,              ``use_global``)
  * pooled regions of the last patch grid         (region_grid^2 tokens, ``region_grid`` > 0)
  * patch tokens of several ViT layers            (N / patch_pool^2 per layer, ``patch_layers``)
  * the text tokens                               (L tokens, padding masked, ``use_text_tokens``)
  * the joint VLM embedding of image and caption  (1 token,              ``use_vlm``, pinclip.vlm)
Each granularity has its own LayerNorm + projection to the fusion width and a learned type
embedding (one per ViT layer for patch tokens), so the queries can tell them apart.

Late fusion: a per-dimension sigmoid gate, computed from both, mixes the normalized image and
text embeddings. The fused vector is early + late (either may be switched off).

The switches are plain attributes, so an ablation can turn a granularity off on a trained model
(only granularities built at construction can be turned back on).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import FusionConfig
from .transformer import CrossAttentionBlock

__all__ = ["HybridFusion"]


def _proj(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


class HybridFusion(nn.Module):
    """Fuses image tower output and text tokens into one [B, embed_dim] (unnormalized) vector.

    ``patch_layers``: resolved 1-based layer indices of the image tower. ``last_layer``: the tower's
    final block index, whose patch grid feeds the regions. ``vlm_width``: the joint VLM encoder's
    hidden size (needed with ``use_vlm``).
    """

    def __init__(self, cfg: FusionConfig, image_width: int, image_global_width: int, text_width: int,
                 embed_dim: int, patch_layers: list[int], last_layer: int, vlm_width: int | None = None):
        super().__init__()
        w = cfg.width
        self.early_fusion = cfg.early_fusion
        self.late_fusion = cfg.late_fusion
        self.use_global = cfg.use_global and cfg.early_fusion
        self.region_grid = cfg.region_grid if cfg.early_fusion else 0
        self.patch_layers = list(patch_layers) if cfg.early_fusion else []
        self.patch_pool = cfg.patch_pool
        self.use_text_tokens = cfg.use_text_tokens and cfg.early_fusion
        self.use_vlm = cfg.use_vlm and cfg.early_fusion
        if self.use_vlm and vlm_width is None:
            raise ValueError("fusion.use_vlm needs the joint VLM encoder's width (vlm.pretrained)")
        self.last_layer = last_layer
        self._built = {"early": cfg.early_fusion, "late": cfg.late_fusion, "global": self.use_global, "regions": self.region_grid,
                       "patch_layers": tuple(self.patch_layers), "text": self.use_text_tokens, "vlm": self.use_vlm}
        if cfg.early_fusion:
            self.queries = nn.Parameter(torch.randn(cfg.num_queries, w) * w ** -0.5)
            self.blocks = nn.ModuleList(
                [CrossAttentionBlock(w, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.layers)])
            self.ln_out = nn.LayerNorm(w)
            self.out_proj = nn.Linear(w, embed_dim)
            if cfg.zero_init_early:   # a residual that starts silent (see FusionConfig)
                nn.init.zeros_(self.out_proj.weight)
                nn.init.zeros_(self.out_proj.bias)
        if self.use_global:
            self.global_proj = _proj(image_global_width, w)
            self.global_type = nn.Parameter(torch.zeros(1, 1, w))
        if self.region_grid:
            self.region_proj = _proj(image_width, w)
            self.region_pos = nn.Parameter(torch.randn(1, self.region_grid ** 2, w) * 0.02)
        if self.patch_layers:
            self.patch_proj = nn.ModuleDict({str(i): _proj(image_width, w) for i in self.patch_layers})
            self.patch_type = nn.ParameterDict(
                {str(i): nn.Parameter(torch.randn(1, 1, w) * 0.02) for i in self.patch_layers})
        if self.use_text_tokens:
            self.text_proj = _proj(text_width, w)
            self.text_type = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        if self.use_vlm:
            self.vlm_proj = _proj(vlm_width, w)
            self.vlm_type = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        if cfg.late_fusion:
            self.gate = nn.Linear(2 * embed_dim, embed_dim)
            # Start as a fixed mix: image weight image_share_init (0.5: the plain average).
            nn.init.zeros_(self.gate.weight)
            nn.init.constant_(self.gate.bias, math.log(cfg.image_share_init / (1.0 - cfg.image_share_init)))

    def required_layers(self) -> list[int]:
        """Image tower layers the enabled granularities read."""
        layers = set(self.patch_layers) if self.early_fusion else set()
        if self.early_fusion and self.region_grid:
            layers.add(self.last_layer)
        return sorted(layers)

    def _check_switches(self) -> None:
        if self.early_fusion and not self._built["early"] or self.late_fusion and not self._built["late"]:
            raise ValueError("fusion.early_fusion / late_fusion can only be switched on if the config built it")
        if (self.use_global and not self._built["global"] or self.use_text_tokens and not self._built["text"]
                or self.use_vlm and not self._built["vlm"]):
            raise ValueError("a fusion granularity can only be switched on if the config built it")
        if self.region_grid and self.region_grid != self._built["regions"]:
            raise ValueError(f"fusion.region_grid was built as {self._built['regions']}, not {self.region_grid}")
        if not set(self.patch_layers) <= set(self._built["patch_layers"]):
            raise ValueError(f"fusion.patch_layers {self.patch_layers} not among the built layers "
                             f"{list(self._built['patch_layers'])}")

    def context(self, image: dict, text_tokens: torch.Tensor | None, text_mask: torch.Tensor | None,
                vlm_vec: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The early-fusion context: ([B, T, width] float, [B, T] bool mask). vlm_vec: [B, Wv]
        float, the joint VLM embedding (``use_vlm``)."""
        parts, masks = [], []
        b = image["global"].shape[0]
        device = image["global"].device

        def add(tokens: torch.Tensor, mask: torch.Tensor | None = None) -> None:
            parts.append(tokens)
            masks.append(torch.ones(tokens.shape[:2], dtype=torch.bool, device=device) if mask is None else mask)

        if self.use_global:
            add(self.global_proj(image["global"]).unsqueeze(1) + self.global_type)
        gh, gw = image["grid"]
        if self.region_grid:
            last = image["layers"][self.last_layer]
            grid = last.transpose(1, 2).reshape(b, -1, gh, gw)
            regions = F.adaptive_avg_pool2d(grid, self.region_grid).flatten(2).transpose(1, 2)
            add(self.region_proj(regions) + self.region_pos)
        for layer in self.patch_layers:
            tokens = image["layers"][layer]
            if self.patch_pool > 1:
                grid = tokens.transpose(1, 2).reshape(b, -1, gh, gw)
                tokens = F.avg_pool2d(grid, self.patch_pool, ceil_mode=True).flatten(2).transpose(1, 2)
            add(self.patch_proj[str(layer)](tokens) + self.patch_type[str(layer)])
        if self.use_text_tokens:
            if text_tokens is None:
                raise ValueError("fusion uses text tokens but none were given")
            add(self.text_proj(text_tokens.to(self.text_type.dtype)) + self.text_type, text_mask.to(torch.bool))
        if self.use_vlm:
            if vlm_vec is None:
                raise ValueError("fusion uses the joint VLM embedding but none was given (vlm_input_ids missing?)")
            add(self.vlm_proj(vlm_vec).unsqueeze(1) + self.vlm_type)
        if not parts:
            raise ValueError("early fusion is on but every granularity is switched off")
        ctx, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        # Why: SDPA returns NaN for a query whose keys are all masked (text-only context with an
        # empty caption); let such rows see their first token rather than poison the batch.
        empty = ~mask.any(dim=1)
        if empty.any():
            mask = mask.clone()
            mask[empty, 0] = True
        return ctx, mask

    def forward(self, image: dict, image_vec: torch.Tensor, text_vec: torch.Tensor,
                text_tokens: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                vlm_vec: torch.Tensor | None = None) -> torch.Tensor:
        """image: ImageTowerOutput; image_vec, text_vec: [B, D] projected (unnormalized) image and
        text embeddings; text_tokens: [B, L, Wt]; text_mask: [B, L] bool; vlm_vec: [B, Wv] the
        joint VLM embedding (``use_vlm``). Returns [B, D]."""
        if not (self.early_fusion or self.late_fusion):
            raise ValueError("both early and late fusion are switched off")
        self._check_switches()
        fused = 0
        if self.early_fusion:
            ctx, mask = self.context(image, text_tokens, text_mask, vlm_vec)
            q = self.queries.to(ctx.dtype).expand(ctx.shape[0], -1, -1)
            for block in self.blocks:
                q = block(q, ctx, mask)
            fused = self.out_proj(self.ln_out(q).mean(dim=1))
        if self.late_fusion:
            i, t = F.normalize(image_vec, dim=-1), F.normalize(text_vec, dim=-1)
            gate = torch.sigmoid(self.gate(torch.cat([i, t], dim=-1)))
            fused = fused + gate * i + (1 - gate) * t
        return fused
