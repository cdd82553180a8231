"""The joint VLM encoder: a pin's image and text through one Qwen-VL-family model.

The Qwen3-VL-Embedding recipe: the image and the caption go into the VLM as one chat turn after
an instruction, and the embedding is the last layer's hidden state at the last token::

    <|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n<|vision_start|>
    <|image_pad|> x N<|vision_end|>{caption}<|im_end|>\\n<|im_start|>assistant\\n

with N = (image_size / patch_size)^2 / spatial_merge_size^2 image tokens. Sequences are padded on
the left, so the last position of every row is its last real token (padding changes no row:
Qwen-VL's multimodal position ids skip masked positions).

Supported checkpoints: ``Qwen2VLForConditionalGeneration`` (``model_type`` ``qwen2_vl``) and
``Qwen3VLForConditionalGeneration`` (``qwen3_vl``), full checkpoints with their tokenizer and
``preprocessor_config.json``; ``AutoModel`` builds the base model (vision tower + language model,
no LM head). Used as a granularity of the hybrid fusion (``fusion.use_vlm``, see
:mod:`pinclip.fusion`) and on its own by the frozen-VLM baseline.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ConfigError
from .freeze import FreezableTower
from .hf_towers import load_local, qwen_patchify, resolve_pretrained
from .transforms import processor_normalization

__all__ = ["VLM_MODEL_TYPES", "DEFAULT_INSTRUCTION", "VLMPromptTokenizer", "JointVLMEncoder", "renormalize"]

VLM_MODEL_TYPES = ("qwen2_vl", "qwen3_vl")
DEFAULT_INSTRUCTION = "Represent the user's input."
_KEY = "vlm.pretrained"


def renormalize(images: torch.Tensor, mean_in: Sequence[float], std_in: Sequence[float],
                mean_out: Sequence[float], std_out: Sequence[float]) -> torch.Tensor:
    """Images normalized with (mean_in, std_in) -> the same pixels normalized with (mean_out,
    std_out). images: [B, 3, H, W] float; the statistics are per channel."""
    def col(values):
        return torch.tensor(list(values), dtype=images.dtype, device=images.device).view(1, -1, 1, 1)
    return (images * col(std_in) + col(mean_in) - col(mean_out)) / col(std_out)


class VLMPromptTokenizer:
    """Captions -> the VLM's prompt ids (``vlm_input_ids``, ``vlm_attention_mask``: [B, L] long,
    left-padded to the longest row of the batch). The caption is cut to ``max_text_tokens``
    tokens; None is the empty caption; a row may leave the image out (``has_image``). The prompt
    pieces are tokenized separately (the special tokens between them split the text anyway, so
    the ids equal those of the whole string)."""

    def __init__(self, path: str, instruction: str, image_tokens: int, max_text_tokens: int):
        from transformers import AutoTokenizer
        self.tokenizer = load_local(AutoTokenizer.from_pretrained, path, "VLM tokenizer", _KEY)
        self.instruction = instruction
        self.image_tokens = int(image_tokens)
        self.max_text_tokens = int(max_text_tokens)
        tok = self.tokenizer
        image_pad = tok.convert_tokens_to_ids("<|image_pad|>")
        if image_pad is None or image_pad == tok.unk_token_id:
            raise ConfigError(f"'{_KEY}' = {path!r}: the tokenizer has no <|image_pad|> token (not a Qwen-VL tokenizer)")
        self.image_pad_id = int(image_pad)
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self._head = self._ids(f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n")
        self._image = (self._ids("<|vision_start|>") + [self.image_pad_id] * self.image_tokens
                       + self._ids("<|vision_end|>"))
        self._suffix = self._ids("<|im_end|>\n<|im_start|>assistant\n")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def __call__(self, texts: Sequence[str | None], has_image: Sequence[bool] | None = None
                 ) -> dict[str, torch.Tensor]:
        """has_image: per caption, whether its prompt holds the image (default: all do); a row
        without it is a text-only prompt, and the encoder ignores that row's image."""
        if has_image is None:
            has_image = [True] * len(texts)
        if len(has_image) != len(texts):
            raise ValueError(f"{len(texts)} captions but {len(has_image)} has_image flags")
        rows = [self._head + (self._image if image else []) + self._ids(t or "")[:self.max_text_tokens]
                + self._suffix for t, image in zip(texts, has_image)]
        length = max((len(r) for r in rows), default=0)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[i, length - len(row):] = 1
        return {"vlm_input_ids": ids, "vlm_attention_mask": mask}

    def save_pretrained(self, directory: str) -> None:
        self.tokenizer.save_pretrained(directory)


def _load_base_model(auto_model, path: str) -> nn.Module:
    """The base model (vision tower + language model) of a full Qwen-VL checkpoint, float32 master
    weights (mixed precision comes from autocast). Why the quiet load: the checkpoint's
    ``lm_head`` is unused here and transformers would print a load report for it; a weight the
    base model misses is an error instead (it would start random)."""
    from transformers.utils import logging as hf_logging
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, info = load_local(auto_model.from_pretrained, path, "VLM", _KEY, dtype=torch.float32,
                                 output_loading_info=True)
    finally:
        hf_logging.set_verbosity(level)
    if info.get("missing_keys"):
        raise ConfigError(f"'{_KEY}' = {path!r}: the checkpoint lacks VLM weights, e.g. "
                          f"{sorted(info['missing_keys'])[:3]}")
    unexpected = sorted(k for k in info.get("unexpected_keys", ()) if not k.startswith("lm_head."))
    if unexpected or info.get("mismatched_keys"):
        raise ConfigError(f"'{_KEY}' = {path!r}: checkpoint weights that do not fit the VLM: "
                          f"{(unexpected + sorted(map(str, info.get('mismatched_keys', ()))))[:3]}")
    return model


class JointVLMEncoder(FreezableTower):
    """A Qwen2-VL / Qwen3-VL model that embeds an image and its caption jointly.

    images: [B, 3, S, S] float normalized with the VLM's own image mean/std (``image_mean``,
    ``image_std``; :func:`renormalize` converts), S = ``image_size``, a multiple of
    ``patch_size * merge_size``; vlm_input_ids / vlm_attention_mask: [B, L] long from
    :attr:`tokenizer`. Returns [B, width] float: the last layer's hidden state at the last token.
    A prompt without image tokens (``tokenizer(texts, has_image=...)``) is text only: its row of
    ``images`` is not read.

    ``weights=False`` builds the architecture from ``config.json`` in ``pretrained`` (a saved
    model directory holds every weight).
    """

    def __init__(self, pretrained: str, image_size: int | None = None, instruction: str = DEFAULT_INSTRUCTION,
                 max_text_tokens: int = 64, weights: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel
        path = resolve_pretrained(pretrained)
        config = load_local(AutoConfig.from_pretrained, path, "VLM config", _KEY)
        if config.model_type not in VLM_MODEL_TYPES:
            raise ConfigError(f"'{_KEY}' = {path!r} is a {config.model_type!r} checkpoint; the joint VLM encoder "
                              f"takes {' or '.join(VLM_MODEL_TYPES)} (a full Qwen-VL checkpoint)")
        if weights:
            self.model = _load_base_model(AutoModel, path)
        else:
            self.model = AutoModel.from_config(config).float()
        vc = config.vision_config
        self.patch_size = int(vc.patch_size)
        self.merge_size = int(vc.spatial_merge_size)
        self.temporal_patch_size = int(vc.temporal_patch_size)
        factor = self.patch_size * self.merge_size
        self.image_size = int(image_size or 14 * factor)
        if self.image_size % factor:
            raise ConfigError(f"key 'vlm.image_size' = {self.image_size} must be a multiple of patch_size * "
                              f"spatial_merge_size = {factor} of the checkpoint {path!r}")
        self.image_tokens = (self.image_size // self.patch_size) ** 2 // self.merge_size ** 2
        self.width = int(config.text_config.hidden_size)
        self.image_mean, self.image_std = processor_normalization(path, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
        self.pretrained_path = path
        self.tokenizer = VLMPromptTokenizer(path, instruction, self.image_tokens, max_text_tokens)
        lm = self.model.language_model
        self._blocks = lm.layers
        self._after = [getattr(lm, "norm", None)]

    def blocks(self) -> Sequence[nn.Module]:
        return self._blocks

    def after_blocks(self) -> Sequence[nn.Module]:
        return self._after

    def prepare_images(self, images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
        """Images normalized with (mean, std) at any size -> this VLM's normalization and size."""
        x = renormalize(images, mean, std, self.image_mean, self.image_std)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        return x

    def forward(self, images: torch.Tensor, vlm_input_ids: torch.Tensor,
                vlm_attention_mask: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"expected images of {self.image_size}x{self.image_size} px, got "
                             f"{tuple(images.shape[-2:])} (prepare_images resizes)")
        if images.shape[0] != vlm_input_ids.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {vlm_input_ids.shape[0]} prompts")
        is_image = vlm_input_ids == self.tokenizer.image_pad_id
        image_slots = is_image.sum(dim=1)
        if bool(((image_slots != self.image_tokens) & (image_slots != 0)).any()):
            raise ValueError(f"a prompt holds {self.image_tokens} image tokens or none (vlm_input_ids from this "
                             f"encoder's tokenizer), got {sorted(set(image_slots.tolist()))}")
        with_image = image_slots > 0
        pixels = {}
        if bool(with_image.any()):
            flat, grid = qwen_patchify(images[with_image], self.patch_size, self.merge_size,
                                       self.temporal_patch_size)
            pixels = {"pixel_values": flat, "image_grid_thw": grid}
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            out = self.model(input_ids=vlm_input_ids, attention_mask=vlm_attention_mask,
                             mm_token_type_ids=is_image.int(), use_cache=False, **pixels)
        return out.last_hidden_state[:, -1]
