"""PinCLIP: image tower + text tower + hybrid fusion -> image / text / fused embeddings.

All three embeddings are projected to ``embed_dim`` and L2-normalized. ``image_emb`` depends on the
image only (it serves a fresh pin with no graph edges and no trusted text); ``text_emb`` on the
text only; ``fused_emb`` on both, through :class:`pinclip.fusion.HybridFusion`.

With ``matryoshka_dims`` (e.g. [64, 128, 256]) the losses also train every prefix; serve a
prefix with :func:`truncate_embedding`.

A frozen text tower's token features can be computed once (:meth:`PinCLIP.text_features`, fp16)
and passed back as ``forward(images, text_features=..., text_mask=...)``; the trainable text
projection and fusion then run on the cached tokens.
"""
from __future__ import annotations

import math
import warnings
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConfigError, PinCLIPConfig, patch_layers_message
from .fusion import HybridFusion
from .lora import add_lora, enable_gradient_checkpointing
from .hf_towers import create_hf_vision_tower, pool_text
from .text import create_text_tower
from .transforms import image_normalization
from .vit import VisionTransformer, resolve_layers
from .vlm import JointVLMEncoder

__all__ = ["PinCLIP", "truncate_embedding", "autocast", "preserve_geometry_"]


def truncate_embedding(emb: torch.Tensor, dim: int) -> torch.Tensor:
    """Matryoshka serving: the first ``dim`` coordinates of [..., D] embeddings, re-normalized."""
    return F.normalize(emb[..., :dim].float(), dim=-1)


def autocast(device_type: str, precision: str = "auto"):
    """Mixed-precision context. ``auto``: bf16 autocast on CUDA, fp32 on CPU (bf16 autocast is
    about 10x slower than fp32 on the development CPUs). ``bf16``: bf16 autocast on any device.
    ``fp32``: no autocast."""
    if precision == "auto":
        precision = "bf16" if device_type == "cuda" else "fp32"
    if precision == "fp32":
        return nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r} (expected auto, fp32, bf16)")


def _create_vlm(cfg: PinCLIPConfig, weights: bool = True) -> JointVLMEncoder | None:
    m = cfg.vlm
    if m.pretrained is None:
        return None
    vlm = JointVLMEncoder(m.pretrained, m.image_size, m.instruction, m.max_text_tokens, weights)
    vlm.set_freeze(m.freeze, m.unfreeze_last_n)
    return _finish_tower(vlm, m, "vlm")


def _finish_tower(tower: nn.Module, section, key: str) -> nn.Module:
    """LoRA adapters and gradient checkpointing of a built tower (after its freezing policy)."""
    add_lora(tower, section.lora, f"{key}.lora")
    if section.gradient_checkpointing:
        enable_gradient_checkpointing(tower)
    return tower


def _create_vision_tower(cfg: PinCLIPConfig, weights: bool = True) -> nn.Module:
    v = cfg.vision
    if v.type == "vit":
        tower = VisionTransformer(v.image_size or 224, v.patch_size, v.width, v.layers, v.heads, v.mlp_ratio,
                                  stem=v.stem, readout_grid=v.readout_grid)
    else:
        tower = create_hf_vision_tower(v.type, v.pretrained, v.image_size, weights)
    tower.set_freeze(v.freeze, v.unfreeze_last_n)
    return _finish_tower(tower, v, "vision")


@torch.no_grad()
def preserve_geometry_(weight: torch.Tensor) -> torch.Tensor:
    """Initialize a Linear weight [out, in] to keep the input's geometry: the identity on the first
    min(out, in) coordinates when out >= in (inner products exactly preserved), else a
    semi-orthogonal map with orthonormal rows drawn from torch's global generator (seeded by the
    trainer), which preserves inner products approximately. In place; returns ``weight``."""
    out_dim, in_dim = weight.shape
    if out_dim >= in_dim:
        weight.zero_()
        weight[:in_dim, :in_dim] = torch.eye(in_dim, dtype=weight.dtype, device=weight.device)
    else:
        nn.init.orthogonal_(weight)
        weight.mul_(math.sqrt(in_dim / out_dim))   # rows orthonormal, scaled so norms are kept on average
    return weight


class PinCLIP(nn.Module):
    """The PinCLIP model. Build it with :func:`pinclip.factory.create_model`.

    Attributes: ``visual`` (image tower), ``text`` (text tower), ``fusion``, ``image_proj``,
    ``text_proj``; parameters ``logit_scale`` (log of the image-text multiplier; None when
    ``loss.image_text`` is ``none`` or its weight 0), ``logit_bias`` (SigLIP only, else None),
    ``neighbor_logit_scale`` (log multiplier of the neighbor alignment; None when every neighbor
    term has weight 0).
    """

    def __init__(self, cfg: PinCLIPConfig, pretrained_weights: bool = True):
        super().__init__()
        self.config = cfg
        d = cfg.embed_dim
        self.embed_dim = d
        # pretrained_weights=False: Hugging Face towers are built from the config.json in their
        # ``pretrained`` folder without reading weights (a saved model dir holds every weight).
        self.visual = _create_vision_tower(cfg, pretrained_weights)
        self.text = _finish_tower(create_text_tower(cfg.text, pretrained_weights), cfg.text, "text")
        self.image_size = self.visual.image_size
        # The joint VLM encoder (None without vlm.pretrained); it sees the model's images
        # re-normalized from the image transform's statistics (image_mean / image_std) to its own.
        self.vlm = _create_vlm(cfg, pretrained_weights)
        if self.vlm is not None:
            self.image_mean, self.image_std = image_normalization(
                cfg.vision, getattr(self.visual, "pretrained_path", None))
        gw = self.visual.global_width
        image_norm = nn.BatchNorm1d(gw, affine=False) if cfg.image_norm == "batch" else nn.LayerNorm(gw)
        self.image_proj = nn.Sequential(image_norm, nn.Linear(gw, d))
        self.text_proj = nn.Sequential(nn.LayerNorm(self.text.width), nn.Linear(self.text.width, d))
        if cfg.projection_init == "preserve":
            for proj in (self.image_proj, self.text_proj):
                preserve_geometry_(proj[1].weight)
                nn.init.zeros_(proj[1].bias)
        try:
            patch_layers = resolve_layers(cfg.fusion.patch_layers, self.visual.num_layers)
        except ValueError as e:   # a Hugging Face tower: its depth is the checkpoint's
            raise ConfigError(patch_layers_message(
                cfg.name, cfg.fusion.patch_layers, e,
                f"the {cfg.vision.type} checkpoint {cfg.vision.pretrained!r} has {self.visual.num_layers} blocks",
                self.visual.num_layers)) from None
        self.fusion = HybridFusion(cfg.fusion, self.visual.width, gw, self.text.width, d,
                                   patch_layers, self.visual.num_layers,
                                   self.vlm.width if self.vlm is not None else None)
        # Scales exist only when a loss term uses them: a trainable parameter that never gets a
        # gradient makes DDP fail ("unused parameters").
        siglip = cfg.loss.image_text == "siglip"
        init_scale = cfg.init_siglip_logit_scale if siglip else cfg.init_logit_scale
        self.logit_scale = (nn.Parameter(torch.tensor(float(init_scale)))
                            if cfg.loss.image_text != "none" and cfg.loss.image_text_weight else None)
        self.logit_bias = (nn.Parameter(torch.tensor(float(cfg.init_logit_bias)))
                           if siglip and self.logit_scale is not None else None)
        uses_neighbors = any((cfg.loss.neighbor_fused_weight, cfg.loss.neighbor_image_weight,
                              cfg.loss.neighbor_image_image_weight,
                              cfg.loss.neighbor_cross_modal_weight and cfg.loss.cross_modal))
        self.neighbor_logit_scale = (nn.Parameter(torch.tensor(float(cfg.init_neighbor_logit_scale)))
                                     if uses_neighbors else None)
        self.max_log_scale = math.log(cfg.max_logit_scale)

    # -- towers -------------------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> dict:
        """images: [B, 3, S, S] float (see :mod:`pinclip.transforms`). Returns ``image_emb`` [B, D]
        float (L2-normalized if ``normalize``), ``image_vec`` [B, D] (before normalization) and
        ``image_tower`` (the :data:`~pinclip.vit.ImageTowerOutput` the fusion reads)."""
        tower = self.visual(images, layers=self.fusion.required_layers())
        vec = self.image_proj(tower["global"])
        emb = F.normalize(vec.float(), dim=-1) if normalize else vec
        return {"image_emb": emb, "image_vec": vec, "image_tower": tower}

    @torch.no_grad()
    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      dtype: torch.dtype = torch.float16) -> dict:
        """Cacheable text tower output: ``{"tokens": [B, L, Wt] dtype, "mask": [B, L] bool}``.

        Valid as a cache only while the text tower is frozen (``text.freeze = "frozen"``)."""
        if not self.text.frozen:
            warnings.warn("text_features() of a trainable text tower: a cache of it goes stale as it trains",
                          stacklevel=2)
        out = self.text(input_ids, attention_mask)
        return {"tokens": out["tokens"].to(dtype), "mask": out["mask"]}

    def encode_text(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    text_features: torch.Tensor | None = None, text_mask: torch.Tensor | None = None,
                    normalize: bool = True) -> dict:
        """Either token ids (input_ids, attention_mask: [B, L] long) or cached tower features
        (text_features: [B, L, Wt] float/fp16, text_mask: [B, L] bool). Returns ``text_emb`` [B, D],
        ``text_vec`` [B, D] (before normalization), ``text_tokens`` [B, L, Wt], ``text_mask``."""
        if text_features is not None:
            if text_mask is None:
                raise ValueError("text_features given without text_mask")
            dtype = self.text_proj[1].weight.dtype
            tokens, mask = text_features.to(dtype), text_mask.to(torch.bool)
            pooled = pool_text(tokens, mask, self.config.text.pooling)
        elif input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out = self.text(input_ids, attention_mask)
            tokens, mask, pooled = out["tokens"], out["mask"], out["pooled"]
        else:
            raise ValueError("encode_text needs input_ids or text_features")
        vec = self.text_proj(pooled)
        emb = F.normalize(vec.float(), dim=-1) if normalize else vec
        return {"text_emb": emb, "text_vec": vec, "text_tokens": tokens, "text_mask": mask}

    def encode_vlm(self, images: torch.Tensor, vlm_input_ids: torch.Tensor,
                   vlm_attention_mask: torch.Tensor) -> torch.Tensor:
        """The joint VLM embedding: images [B, 3, S, S] float (the model's image transform),
        vlm_input_ids / vlm_attention_mask [B, L] long (:func:`pinclip.factory.get_vlm_tokenizer`).
        Returns [B, Wv] float (the VLM's last-token hidden state, unprojected)."""
        if self.vlm is None:
            raise ValueError("this model has no joint VLM encoder (vlm.pretrained is not set)")
        images = self.vlm.prepare_images(images, self.image_mean, self.image_std)
        return self.vlm(images, vlm_input_ids, vlm_attention_mask)

    # -- scales -------------------------------------------------------------------------------
    def scales(self) -> dict:
        """The exp'd, clamped multipliers the losses take (open_clip clamps log scale to log 100):
        ``logit_scale``, ``neighbor_logit_scale`` (0-dim float) and ``logit_bias`` (or None)."""
        def exp(p):
            return None if p is None else p.clamp(max=self.max_log_scale).exp()
        return {"logit_scale": exp(self.logit_scale), "neighbor_logit_scale": exp(self.neighbor_logit_scale),
                "logit_bias": self.logit_bias}

    # -- full model ---------------------------------------------------------------------------
    def forward(self, images: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, text_features: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None, vlm_input_ids: torch.Tensor | None = None,
                vlm_attention_mask: torch.Tensor | None = None) -> dict:
        """images: [B, 3, S, S] float; text as ids ([B, L] long input_ids / attention_mask) or
        cached features ([B, L, Wt] text_features, [B, L] bool text_mask); with a joint VLM
        granularity (``fusion.use_vlm``) also the VLM prompt ids ([B, L'] long vlm_input_ids /
        vlm_attention_mask, from :func:`pinclip.factory.get_vlm_tokenizer`).

        Returns a dict with ``image_emb``, ``text_emb``, ``fused_emb`` ([B, D] float32, also under
        autocast; unit L2 norm; a key is absent when its input is missing: fused needs both) and the
        scales ``logit_scale``, ``neighbor_logit_scale`` (0-dim float, or None when no loss term
        uses them) and ``logit_bias`` (0-dim, SigLIP only, else None).
        """
        out = dict(self.scales())
        image = text = None
        if images is not None:
            image = self.encode_image(images)
            out["image_emb"] = image["image_emb"]
        if input_ids is not None or text_features is not None:
            text = self.encode_text(input_ids, attention_mask, text_features, text_mask)
            out["text_emb"] = text["text_emb"]
        if image is not None and text is not None:
            vlm_vec = None
            if self.fusion.use_vlm:
                if vlm_input_ids is None:
                    raise ValueError("the fusion reads the joint VLM embedding (fusion.use_vlm): give "
                                     "vlm_input_ids / vlm_attention_mask (pinclip.factory.get_vlm_tokenizer)")
                vlm_vec = self.encode_vlm(images, vlm_input_ids, vlm_attention_mask)
            fused = self.fusion(image["image_tower"], image["image_vec"], text["text_vec"],
                                text["text_tokens"], text["text_mask"], vlm_vec)
            out["fused_emb"] = F.normalize(fused.float(), dim=-1)
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    # -- model directories (pinclip.pretrained) ---------------------------------------------------
    def save_pretrained(self, directory, **kwargs) -> dict:
        """Write this model into the empty directory ``directory``: :func:`pinclip.pretrained.save_pretrained`."""
        from .pretrained import save_pretrained
        return save_pretrained(self, directory, **kwargs)

    @classmethod
    def from_pretrained(cls, directory, device: str = "cpu") -> "PinCLIP":
        """The model of a saved model directory (``pinclip.load(directory).model``), in eval mode."""
        from .pretrained import load
        return load(directory, device).model
