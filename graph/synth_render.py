"""Image renderer of the synthetic Pin-Board world (see ``graph.synth``).

A pin image is an RGB square: a textured, tinted background that shows the pin's latent
**style** (stripes, dots, checker, hatching, grain, gradient or plain) and one object whose
**shape** and palette show its **topic**, drawn at a random position, scale and rotation with
colour jitter. Every random draw of pin ``p`` comes from its own generator,
``SeedSequence(seed, spawn_key=(RENDER_KEY, p))``, so an image depends only on
``(seed, p, topic, style, size)``: rendering in any number of processes, in any chunking, gives
byte-identical PNG files.

``render_chunk`` is the unit of work of the process pool; ``render_pin`` returns one image as a
``uint8`` array ``[size, size, 3]``.
"""
from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

RENDER_KEY = 0x5EED_1A6E  # spawn-key namespace of the per-pin image generators

# Topic shapes, by name (``graph.synth.TOPICS`` names one per topic).
SHAPES = ("circle", "square", "triangle", "star", "ring", "cross", "diamond", "hexagon", "heart",
          "bar", "arrow", "moon")

# Background textures, one per style (``graph.synth.STYLES`` follows this order), and each
# style's base tint (RGB, before jitter).
TEXTURES = ("hstripes", "vstripes", "dots", "checker", "hatch", "grain", "gradient", "plain")
STYLE_TINTS = (
    (190, 215, 240),  # hstripes: light blue
    (240, 200, 215),  # vstripes: pink
    (200, 235, 205),  # dots: mint
    (215, 210, 235),  # checker: lavender
    (245, 215, 185),  # hatch: peach
    (225, 220, 200),  # grain: beige
    (235, 235, 190),  # gradient: pale yellow -> steel blue
    (232, 232, 232),  # plain: light grey
)
GRADIENT_END = (150, 185, 215)

_SUPERSAMPLE = 2  # shapes are drawn at 2x and box-filtered down (anti-aliasing)


def _regular(n: int, radius: float = 1.0, start: float = -math.pi / 2) -> list[tuple[float, float]]:
    return [(radius * math.cos(start + 2 * math.pi * k / n), radius * math.sin(start + 2 * math.pi * k / n))
            for k in range(n)]


def _star() -> list[tuple[float, float]]:
    pts = []
    for k in range(10):
        r = 1.0 if k % 2 == 0 else 0.42
        a = -math.pi / 2 + math.pi * k / 5
        pts.append((r * math.cos(a), r * math.sin(a)))
    return pts


def _heart() -> list[tuple[float, float]]:
    pts = []
    for k in range(40):
        t = 2 * math.pi * k / 40
        x = 16 * math.sin(t) ** 3
        y = 13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t)
        pts.append((x / 16.5, -(y + 2.5) / 16.5))  # image y points down
    return pts


_a = 0.3  # half-width of the cross arms
# Unit polygons (radius about 1) of the polygon shapes; circle, ring and moon are drawn as discs.
_POLYGONS: dict[str, list[tuple[float, float]]] = {
    "square": [(-0.75, -0.75), (0.75, -0.75), (0.75, 0.75), (-0.75, 0.75)],
    "triangle": _regular(3),
    "star": _star(),
    "cross": [(-_a, -1), (_a, -1), (_a, -_a), (1, -_a), (1, _a), (_a, _a), (_a, 1), (-_a, 1),
              (-_a, _a), (-1, _a), (-1, -_a), (-_a, -_a)],
    "diamond": [(0, -1), (0.6, 0), (0, 1), (-0.6, 0)],
    "hexagon": _regular(6, start=0.0),
    "heart": _heart(),
    "bar": [(-1, -0.32), (1, -0.32), (1, 0.32), (-1, 0.32)],
    "arrow": [(-1, -0.18), (0.2, -0.18), (0.2, -0.5), (1, 0), (0.2, 0.5), (0.2, 0.18), (-1, 0.18)],
}


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.int32)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def background(style: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """The style's textured background: float32 ``[size, size, 3]`` in 0..255."""
    texture = TEXTURES[style]
    base = np.clip(np.asarray(STYLE_TINTS[style], np.float32) + rng.integers(-12, 13, 3), 0, 255)
    dark = base * np.float32(rng.uniform(0.62, 0.74))
    period = int(rng.integers(max(4, size // 10), max(6, size // 6) + 1))
    phase_x, phase_y = (int(v) for v in rng.integers(0, period, 2))
    yy, xx = _grid(size)
    half = max(1, period // 2)
    if texture == "hstripes":
        mask = ((yy + phase_y) // half) % 2 == 1
    elif texture == "vstripes":
        mask = ((xx + phase_x) // half) % 2 == 1
    elif texture == "dots":
        dx = (xx + phase_x) % period - period / 2
        dy = (yy + phase_y) % period - period / 2
        mask = dx * dx + dy * dy < (0.3 * period) ** 2
    elif texture == "checker":
        mask = (((xx + phase_x) // half) + ((yy + phase_y) // half)) % 2 == 1
    elif texture == "hatch":
        mask = (xx + yy + phase_x) % period < max(1, round(0.35 * period))
    elif texture == "grain":
        grain = rng.normal(0.0, 30.0, (size, size, 1)).astype(np.float32)
        return np.clip(base + grain, 0, 255)
    elif texture == "gradient":
        end = np.clip(np.asarray(GRADIENT_END, np.float32) + rng.integers(-12, 13, 3), 0, 255)
        angle = rng.uniform(0, 2 * math.pi)
        t = ((xx - size / 2) * math.cos(angle) + (yy - size / 2) * math.sin(angle)) / size + 0.5
        t = np.clip(t, 0, 1).astype(np.float32)[..., None]
        return base * (1 - t) + end * t
    elif texture == "plain":
        return np.broadcast_to(base, (size, size, 3)).astype(np.float32)
    else:  # pragma: no cover
        raise AssertionError(texture)
    return np.where(mask[..., None], dark, base).astype(np.float32)


def object_mask(shape: str, size: int, cx: float, cy: float, radius: float, angle: float) -> np.ndarray:
    """Coverage of one object: float32 ``[size, size]`` in 0..1 (anti-aliased)."""
    s = _SUPERSAMPLE
    big = size * s
    im = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(im)
    cx, cy, r = cx * s, cy * s, radius * s

    def disc(x: float, y: float, rad: float, fill: int) -> None:
        draw.ellipse((x - rad, y - rad, x + rad, y + rad), fill=fill)

    if shape == "circle":
        disc(cx, cy, 0.85 * r, 255)
    elif shape == "ring":
        disc(cx, cy, 0.9 * r, 255)
        disc(cx, cy, 0.5 * r, 0)
    elif shape == "moon":
        disc(cx, cy, 0.9 * r, 255)
        disc(cx + 0.5 * r * math.cos(angle), cy + 0.5 * r * math.sin(angle), 0.8 * r, 0)
    else:
        c, sn = math.cos(angle), math.sin(angle)
        pts = [(cx + r * (x * c - y * sn), cy + r * (x * sn + y * c)) for x, y in _POLYGONS[shape]]
        draw.polygon(pts, fill=255)
    im = im.resize((size, size), Image.Resampling.BOX)
    return np.asarray(im, np.float32) / 255.0


def render_pin(seed: int, pin: int, shape: str, palette: Sequence[Sequence[int]], style: int,
               size: int) -> np.ndarray:
    """Pin ``pin``'s image as ``uint8 [size, size, 3]``; a pure function of its arguments."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(RENDER_KEY, pin)))
    img = background(style, size, rng)
    radius = size * rng.uniform(0.2, 0.34)
    cx = rng.uniform(radius, size - radius) if size > 2 * radius else size / 2
    cy = rng.uniform(radius, size - radius) if size > 2 * radius else size / 2
    angle = rng.uniform(0, 2 * math.pi)
    colour = np.asarray(palette[int(rng.integers(len(palette)))], np.float32) + rng.integers(-20, 21, 3)
    colour = np.clip(colour, 0, 255)
    m = object_mask(shape, size, cx, cy, radius, angle)[..., None]
    img = img * (1 - m) + colour * m
    img *= np.float32(rng.uniform(0.92, 1.06))  # global brightness jitter
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def render_chunk(out_dir: str, items: Sequence[tuple[int, str, int, int]], seed: int,
                 shapes: Sequence[str], palettes: Sequence[Sequence[Sequence[int]]],
                 size: int) -> int:
    """Render and save the pins ``items`` = ``[(pin, relative_path, topic, style), ...]`` as PNG.

    ``shapes[topic]`` and ``palettes[topic]`` describe each topic. Files go under ``out_dir``.
    Returns how many images were written (the pool's progress unit).
    """
    root = Path(out_dir)
    for pin, rel, topic, style in items:
        arr = render_pin(seed, pin, shapes[topic], palettes[topic], style, size)
        # PNG without timestamps or other metadata: the bytes depend on the pixels only.
        Image.fromarray(arr, "RGB").save(os.fspath(root / rel), format="PNG", compress_level=6)
    return len(items)
