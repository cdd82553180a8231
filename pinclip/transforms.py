"""Image preprocessing with Pillow + torch only (no torchvision).

:class:`ImageTransform`: PIL image (or path) -> [3, S, S] float32 tensor, normalized.
  eval:  resize the shorter side to S (bicubic), center crop S x S, normalize;
  train: random resized crop (area ``scale``, aspect ``ratio``), horizontal flip, color jitter.
Randomness comes from an explicit ``torch.Generator`` when one is given (else torch's global RNG,
which DataLoader seeds per worker).

:func:`open_image`: the one way this toolkit opens an image file. It refuses what would hang or
exhaust memory instead of decoding it: a path that is not a regular file (a FIFO would block
forever, a device or directory is no image), and an image whose header declares more than
``max_pixels`` pixels (checked before decoding; Pillow's own decompression-bomb warning and error
count as too large too). Every refusal is an :class:`ImageReadError` naming the path.

:class:`HFImageTransform`: the checkpoint's ``transformers`` image processor (PIL backend), for the
Hugging Face towers, with the same training augmentations applied before it.
"""
from __future__ import annotations

import json
import math
import os
import re
import stat
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance

from .hf_towers import load_local

__all__ = ["AugmentConfig", "ImageTransform", "HFImageTransform", "ImageReadError", "open_image", "image_normalization",
           "processor_normalization",
           "read_image_size", "DEFAULT_MAX_IMAGE_PIXELS", "load_rgb", "resize_shorter", "center_crop",
           "to_tensor", "normalize"]

# 50 megapixels: a 7071 x 7071 image, 150 MB decoded as RGB. Pillow's own limit (89.5M pixels,
# a warning; twice that, an error) let a 48 KB PNG cost 0.8 GB and 2.3 s per decode.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


class ImageReadError(ValueError):
    """An image file that cannot be read safely.

    Attributes: ``path`` (str); ``reason``: ``"missing"``, ``"not_regular"`` (a FIFO, device,
    directory...), ``"unreadable"`` (permissions, not an image, truncated or corrupt data) or
    ``"too_large"`` (over the pixel cap); ``detail``: the sentence without the path.
    """

    REASONS = ("missing", "not_regular", "unreadable", "too_large")

    def __init__(self, path: str | PathLike, reason: str, detail: str) -> None:
        assert reason in self.REASONS, reason
        self.path, self.reason, self.detail = os.fspath(path), reason, detail
        super().__init__(f"{self.path}: {detail}")


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _bomb_detail(exc: Exception, max_pixels: int | None) -> str:
    """Pillow's decompression-bomb message, reworded in this module's terms when it parses."""
    found = re.search(r"\((\d+) pixels\) exceeds limit of (\d+)", str(exc))
    if found is None:
        return f"over Pillow's decompression-bomb limit ({exc})"
    pixels, limit = int(found.group(1)), int(found.group(2))
    cap = "" if max_pixels is None or pixels <= max_pixels else f" and over the cap of {max_pixels:,} pixels"
    return (f"declares {pixels:,} pixels, over Pillow's decompression-bomb limit of {limit:,}{cap} "
            "(checked before decoding)")


def open_image(path: str | PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
               decode: bool = True) -> Image.Image:
    """Open the image file ``path`` safely and return it decoded (``decode=False``: header only,
    file closed: use ``.size``, ``.mode`` and ``.format`` only).

    Regular files only: the path is ``stat``-ed before it is opened (a FIFO is never opened, so
    it cannot block), opened with ``O_NONBLOCK`` and checked again on the open descriptor (a
    file swapped for a FIFO in between is caught too). Then Pillow reads the header alone and
    ``width x height`` is compared with ``max_pixels`` (None: no cap of ours) before any pixel
    is decoded; Pillow's ``DecompressionBombWarning`` / ``DecompressionBombError`` (beyond its
    global ``Image.MAX_IMAGE_PIXELS``) are refusals too. Raises :class:`ImageReadError`.
    """
    path = os.fspath(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ImageReadError(path, "missing", "no such file") from None
    except OSError as exc:
        raise ImageReadError(path, "unreadable", f"cannot stat ({exc.strerror or exc})") from None
    if not stat.S_ISREG(mode):
        raise ImageReadError(path, "not_regular", f"{_file_kind(mode)}, not an image file")
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise ImageReadError(path, "unreadable", f"cannot open ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise ImageReadError(path, "not_regular", f"{_file_kind(mode)}, not an image file")
        try:
            # Why a warnings filter: Pillow only *warns* between its limit and twice its limit.
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                image = Image.open(fh)
                width, height = image.size
                if max_pixels is not None and width * height > max_pixels:
                    raise ImageReadError(path, "too_large", f"{width} x {height} = {width * height:,} pixels, "
                                         f"over the cap of {max_pixels:,} pixels (checked before decoding)")
                if decode:
                    image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageReadError(path, "too_large", _bomb_detail(exc, max_pixels)) from None
        except ImageReadError:
            raise
        except Image.UnidentifiedImageError:
            raise ImageReadError(path, "unreadable", "not an image (no format Pillow reads matches its "
                                 "first bytes)") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # UnidentifiedImageError (not an image) is an OSError; truncated data too.
            raise ImageReadError(path, "unreadable", f"cannot decode ({type(exc).__name__}: {exc})") from None
    return image


def read_image_size(path: str | PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """``(width, height)`` from the header of ``path``, with every check of :func:`open_image`
    but no decoding (a bad image raises :class:`ImageReadError`)."""
    return open_image(path, max_pixels, decode=False).size


def load_rgb(image: Image.Image | str | PathLike, max_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS) -> Image.Image:
    """Open a path (with :func:`open_image`) or take a PIL image, and convert to RGB (palette,
    alpha and gray images too)."""
    if not isinstance(image, Image.Image):
        image = open_image(image, max_pixels)
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
        """The image processor saved in ``path`` (local files only: a miss raises
        ``pinclip.hf_towers.PretrainedNotFoundError`` naming ``vision.pretrained`` and the path)."""
        from transformers import AutoImageProcessor
        return cls(load_local(AutoImageProcessor.from_pretrained, path, "image processor", "vision.pretrained",
                              backend="pil"), image_size, train, **kwargs)

    def __call__(self, image) -> torch.Tensor:
        image = load_rgb(image)
        if self.train:
            image = augment(image, self.image_size, self.aug, self.generator)
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(f"image processor produced {tuple(pixels.shape[-2:])} px but the tower "
                             f"expects {self.image_size}; set vision.use_hf_processor=false")
        return pixels.float()


def processor_normalization(path: str | PathLike | None, mean: Sequence[float], std: Sequence[float]
                            ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel from the ``preprocessor_config.json`` in the checkpoint folder
    ``path`` (``image_mean`` / ``image_std``), else the given ``mean`` / ``std``."""
    if path is not None:
        pre = Path(str(path)) / "preprocessor_config.json"
        if pre.is_file():
            data = json.loads(pre.read_text())
            mean, std = data.get("image_mean", mean), data.get("image_std", std)
    return tuple(float(x) for x in mean), tuple(float(x) for x in std)


def image_normalization(vision_config, pretrained_path: str | None = None
                        ) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel that a model's image transform normalizes with: the checkpoint's
    ``preprocessor_config.json`` when ``pretrained_path`` holds one (Hugging Face towers), else
    ``vision_config.image_mean`` / ``image_std`` (a :class:`pinclip.config.VisionConfig`)."""
    return processor_normalization(pretrained_path, vision_config.image_mean, vision_config.image_std)
