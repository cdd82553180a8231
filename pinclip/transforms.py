"""Image preprocessing with Pillow + torch only (no torchvision).

:class:`ImageTransform`: PIL image (or path) -> [3, S, S] float32 tensor, normalized.
  eval:  resize the shorter side to S (bicubic), center crop S x S, normalize;
  train: random resized crop (area ``scale``, aspect ``ratio``), horizontal flip, color jitter.
Randomness comes from an explicit ``torch.Generator`` when one is given (else torch's global RNG,
which DataLoader seeds per worker).

:class:`HFImageTransform`: the checkpoint's ``transformers`` image processor (PIL backend), for the
Hugging Face towers, with the same training augmentations applied before it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from os import PathLike
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

__all__ = ["AugmentConfig", "ImageTransform", "HFImageTransform", "load_rgb", "resize_shorter",
           "center_crop", "to_tensor", "normalize"]


def load_rgb(image: Image.Image | str | PathLike) -> Image.Image:
    """Open a path or take a PIL image, and convert to RGB (palette, alpha and gray images too)."""
    if not isinstance(image, Image.Image):
        with Image.open(image) as im:
            image = im.copy()
    if image.mode == "RGBA" or (image.mode == "P" and "transparency" in image.info):
        # Why composite on white: dropping alpha directly turns transparent pixels black.
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image.convert("RGB") if image.mode != "RGB" else image


def resize_shorter(image: Image.Image, size: int, resample=Image.Resampling.BICUBIC) -> Image.Image:
    w, h = image.size
    if min(w, h) == size:
        return image
    scale = size / min(w, h)
    return image.resize((max(size, round(w * scale)), max(size, round(h * scale))), resample)


def center_crop(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean_t) / std_t


@dataclass
class AugmentConfig:
    """Training augmentations. ``scale``: area fraction range of the random crop; ``ratio``:
    aspect ratio range; ``hflip``: flip probability; ``brightness``/``contrast``/``saturation``:
    jitter strength (factor drawn from [1 - s, 1 + s]; 0 = off)."""
    scale: tuple[float, float] = (0.6, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def augment(image: Image.Image, size: int, aug: AugmentConfig, generator: torch.Generator | None,
            resample=Image.Resampling.BICUBIC) -> Image.Image:
    """Random resized crop to size x size, flip and color jitter (PIL in, PIL out)."""
    w, h = image.size
    area = w * h
    box = None
    for _ in range(10):  # the torchvision RandomResizedCrop recipe
        target = area * _uniform(*aug.scale, generator)
        log_ratio = _uniform(math.log(aug.ratio[0]), math.log(aug.ratio[1]), generator)
        ar = math.exp(log_ratio)
        cw, ch = round(math.sqrt(target * ar)), round(math.sqrt(target / ar))
        if 0 < cw <= w and 0 < ch <= h:
            left = int(torch.randint(0, w - cw + 1, (), generator=generator))
            top = int(torch.randint(0, h - ch + 1, (), generator=generator))
            box = (left, top, left + cw, top + ch)
            break
    if box is None:  # fall back to the central square
        s = min(w, h)
        box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
    image = image.resize((size, size), resample, box=box)
    if float(torch.rand((), generator=generator)) < aug.hflip:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    for strength, enhancer in ((aug.brightness, ImageEnhance.Brightness),
                               (aug.contrast, ImageEnhance.Contrast),
                               (aug.saturation, ImageEnhance.Color)):
        if strength > 0:
            image = enhancer(image).enhance(_uniform(1 - strength, 1 + strength, generator))
    return image


class ImageTransform:
    """PIL image or path -> [3, image_size, image_size] float32 tensor, normalized by mean/std."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], train: bool = False,
                 augment_config: AugmentConfig | None = None, generator: torch.Generator | None = None):
        self.image_size, self.mean, self.std, self.train = image_size, tuple(mean), tuple(std), train
        self.aug = augment_config or AugmentConfig()
        self.generator = generator

    def __call__(self, image) -> torch.Tensor:
        image = load_rgb(image)
        if self.train:
            image = augment(image, self.image_size, self.aug, self.generator)
        else:
            image = center_crop(resize_shorter(image, self.image_size), self.image_size)
        return normalize(to_tensor(image), self.mean, self.std)

    def __repr__(self) -> str:
        return f"ImageTransform(size={self.image_size}, train={self.train})"


class HFImageTransform:
    """A ``transformers`` image processor (loaded with the PIL backend, no torchvision) as a
    per-image transform: PIL image or path -> [3, S, S] float32 ``pixel_values``. With ``train``,
    the :class:`AugmentConfig` augmentations run first, at the processor's crop size."""

    def __init__(self, processor, image_size: int, train: bool = False,
                 augment_config: AugmentConfig | None = None, generator: torch.Generator | None = None):
        self.processor, self.image_size, self.train = processor, image_size, train
        self.aug = augment_config or AugmentConfig()
        self.generator = generator

    @classmethod
    def from_pretrained(cls, path: str, image_size: int, train: bool = False, **kwargs) -> "HFImageTransform":
        from transformers import AutoImageProcessor
        return cls(AutoImageProcessor.from_pretrained(path, backend="pil"), image_size, train, **kwargs)

    def __call__(self, image) -> torch.Tensor:
        image = load_rgb(image)
        if self.train:
            image = augment(image, self.image_size, self.aug, self.generator)
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"image processor produced {tuple(pixels.shape[-2:])} px but the tower "
                             f"expects {self.image_size}; set vision.use_hf_processor=false")
        return pixels.float()
