"""The frozen text encoder with the raw pixels beside it: what a model gets from the images with
no image training at all.

An image tower trained from scratch has to beat this to have learned anything about the images
(on Unihan's glyphs the demo's 150-step tower does not: ``benchmarks/RESULTS.md``).

* ``pixel_embeddings``: every pin's image resized to ``side x side`` RGB (``PIXEL_SIDE``, 32),
  flattened, centered over the pins with an image, projected on its top ``components`` principal
  components (128; fitted on at most ``PCA_FIT_ROWS`` evenly strided pins) and divided by each
  component's singular value to the power ``power`` (0.5: the variance flattened, not equalized, so a few dominant directions do not decide every
  neighbor). Deterministic (an exact eigendecomposition, no random draw).
* ``late_fusion``: ``[sqrt(1 - a) * image, sqrt(a) * text]`` of two sets of unit rows, so a
  cosine is ``(1 - a) * image cosine + a * text cosine``; the text weight ``a`` is the one of
  ``TEXT_WEIGHTS`` with the best board-mate recall@10 on the graph store's VALIDATION edges
  (never test).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["PIXEL_SIDE", "PIXEL_COMPONENTS", "PIXEL_POWER", "TEXT_WEIGHTS", "pixel_embeddings", "LateFusion",
           "late_fusion"]

PIXEL_SIDE = 32
PIXEL_COMPONENTS = 128
PIXEL_POWER = 0.5
PCA_FIT_ROWS = 20_000
TEXT_WEIGHTS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def pixel_embeddings(image_paths: Sequence[Any], side: int = PIXEL_SIDE, components: int = PIXEL_COMPONENTS,
                     power: float = PIXEL_POWER, progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(float32 [P, min(components, ...)] unit rows, bool [P] has an image) from one image path per
    pin (None: no image -> the zero row). Images are decoded with ``pinclip.transforms.open_image``
    (its checks and errors: the file that fails is named)."""
    from pinclip.transforms import open_image
    paths = list(image_paths)
    has = np.array([p is not None for p in paths], dtype=bool)
    x = np.zeros((len(paths), side * side * 3), dtype=np.float32)
    rows = range(len(paths))
    if progress:
        rows = tqdm(rows, desc="pixels", unit="pin")
    for i in rows:
        if paths[i] is not None:
            im = open_image(paths[i]).convert("RGB").resize((side, side))
            x[i] = np.asarray(im, dtype=np.float32).ravel() / 255.0
    out = np.zeros((len(paths), 0), dtype=np.float32)
    if has.any():
        mean = x[has].mean(axis=0, keepdims=True)
        # The components come from at most PCA_FIT_ROWS evenly strided pins: the covariance of a
        # million pins costs as much as the decode and says nothing more about 3,072 pixels.
        fit = np.nonzero(has)[0]
        fit = fit[::max(1, -(-fit.size // PCA_FIT_ROWS))]
        xf = (x[fit] - mean).astype(np.float64)
        evals, evecs = np.linalg.eigh(xf.T @ xf)                 # ascending
        k = min(components, xf.shape[0], xf.shape[1])
        top = np.argsort(evals)[::-1][:k]
        # Singular values of the fitted rows; their common scale (how many rows were fitted)
        # cancels in the row normalization below.
        sv = np.sqrt(np.maximum(evals[top], 0.0))
        out = np.zeros((len(paths), k), dtype=np.float32)
        out[has] = ((x[has] - mean) @ evecs[:, top] / np.maximum(sv, 1e-12) ** power).astype(np.float32)
    emb = F.normalize(torch.from_numpy(out), dim=1)
    return emb, torch.from_numpy(has)


@dataclass(frozen=True)
class LateFusion:
    """embedding: float32 [P, Di + Dt]; text_weight: the chosen ``a``; validation: {a: board-mate
    recall@10 on the validation edges} (empty when the store has none: ``a`` is then 0.5)."""
    embedding: torch.Tensor
    text_weight: float
    validation: dict[float, float | None]


def late_fusion(g: Any, image: torch.Tensor, text: torch.Tensor, weights: Sequence[float] = TEXT_WEIGHTS) -> LateFusion:
    """``[sqrt(1 - a) * image, sqrt(a) * text]`` (image float [P, Di], text float [P, Dt], both
    normalized here) with ``a`` chosen on ``g``'s validation edges (ties: the first of
    ``weights``)."""
    from graph.splits import VAL
    from training.evaluation.summary import board_recall_on_split
    img = F.normalize(torch.as_tensor(image).float(), dim=1)
    txt = F.normalize(torch.as_tensor(text).float(), dim=1)

    def fuse(a: float) -> torch.Tensor:
        return torch.cat([img * (1.0 - a) ** 0.5, txt * a ** 0.5], dim=1)
    val = {float(a): board_recall_on_split(g, fuse(a), VAL) for a in weights}
    scored = {a: v for a, v in val.items() if v is not None}
    if not scored:
        return LateFusion(fuse(0.5), 0.5, {})
    best = max(scored.values())
    a = next(a for a in scored if scored[a] == best)
    return LateFusion(fuse(a), a, val)
