"""One training step's loss and gradients, with gradient accumulation that keeps the contrastive
loss exact over the whole batch (open_clip's ``--accum-freq`` feature caching).

A batch (``training.data.TrainBatch``) holds U distinct pins; each is encoded once and the seeds,
their positives and the negatives are gathered from those rows. With ``accum_freq = A > 1`` the
U rows are split into A micro-batches:

1. no-grad pass: encode every micro-batch, keep its embeddings (and the RNG state it started
   with, so dropout-like randomness is replayed);
2. for each micro-batch j: encode it again with grad, splice its live embeddings into the cached
   ones of the other micro-batches, compute the loss of the *whole* batch and backward.

The sum of the A backward passes is the full-batch gradient: each pass carries the gradient of
the full loss with respect to micro-batch j's embeddings. The logit scales enter the loss
directly, so they are live in the last pass only (detached in the others) — otherwise their
gradient would be counted A times. Activation memory is that of one micro-batch; compute is
about 4/3 of the plain step (one extra forward).
"""
from __future__ import annotations

from typing import Any

import torch

from pinclip.model import autocast

__all__ = ["EMBED_KEYS", "SCALE_KEYS", "forward_rows", "batch_loss", "compute_gradients"]

EMBED_KEYS = ("image_emb", "text_emb", "fused_emb")
SCALE_KEYS = ("logit_scale", "neighbor_logit_scale", "logit_bias")


def _text_slice(text: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in text.items()}


def forward_rows(model: Any, batch: Any, lo: int = 0, hi: int | None = None) -> dict:
    """The model's output dict for rows ``lo:hi`` of the batch (images and text)."""
    hi = batch.num_rows if hi is None else hi
    return model(batch.images[lo:hi], **_text_slice(batch.text, lo, hi))


def batch_loss(loss_fn: Any, emb: dict, scales: dict, batch: Any, caption_positives: bool = True) -> dict:
    """The loss terms of ``batch`` from per-row embeddings ``emb`` ([U, D] per key) and the model's
    ``scales``. Returns the dict of :class:`pinclip.losses.PinCLIPLoss` (weighted terms + ``loss``)."""
    seeds = {k: emb[k][batch.seed_rows] for k in EMBED_KEYS if k in emb}
    seeds.update(scales)
    neighbors = negatives = None
    if batch.positive_rows is not None:
        flat = batch.positive_rows.reshape(-1)
        neighbors = {k: emb[k][flat] for k in EMBED_KEYS if k in emb}
    if batch.negative_rows is not None:
        negatives = {k: emb[k][batch.negative_rows] for k in EMBED_KEYS if k in emb}
    return loss_fn(seeds, neighbors, batch.positive_weights, batch.false_negative_mask,
                   positive_ids=batch.caption_ids if caption_positives else None,
                   negative_outputs=negatives,
                   negative_mask=batch.negative_mask if negatives is not None else None)


def _rng_state(device: torch.device) -> tuple:
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple, device: torch.device) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], device)


def _bounds(rows: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, rows))
    edges = [round(i * rows / parts) for i in range(parts + 1)]
    return [(edges[i], edges[i + 1]) for i in range(parts) if edges[i + 1] > edges[i]]


def compute_gradients(model: Any, loss_fn: Any, batch: Any, accum_freq: int = 1, precision: str = "auto",
                      caption_positives: bool = True) -> dict[str, torch.Tensor]:
    """Forward and backward of one batch; gradients accumulate into ``.grad``.

    Returns the loss terms (detached 0-dim tensors) of the full batch.
    """
    device = batch.images.device
    dtype = device.type
    if accum_freq <= 1:
        with autocast(dtype, precision):
            out = model(batch.images, **batch.text)
            emb = {k: out[k] for k in EMBED_KEYS if k in out}
            scales = {k: out.get(k) for k in SCALE_KEYS}
            losses = batch_loss(loss_fn, emb, scales, batch, caption_positives)
        losses["loss"].backward()
        return {k: v.detach() for k, v in losses.items()}

    bounds = _bounds(batch.num_rows, accum_freq)
    cached: dict[str, list[torch.Tensor]] = {}
    states = []
    with torch.no_grad():
        for lo, hi in bounds:
            states.append(_rng_state(device))
            with autocast(dtype, precision):
                out = forward_rows(model, batch, lo, hi)
            for k in EMBED_KEYS:
                if k in out:
                    cached.setdefault(k, []).append(out[k].detach())
    losses: dict[str, torch.Tensor] = {}
    last = len(bounds) - 1
    for j, (lo, hi) in enumerate(bounds):
        _set_rng_state(states[j], device)
        with autocast(dtype, precision):
            out = forward_rows(model, batch, lo, hi)
            emb = {k: torch.cat(cached[k][:j] + [out[k]] + cached[k][j + 1:]) for k in cached}
            scales = {}
            for k in SCALE_KEYS:
                v = out.get(k)
                scales[k] = v if (v is None or j == last) else v.detach()
            losses = batch_loss(loss_fn, emb, scales, batch, caption_positives)
        losses["loss"].backward()
    return {k: v.detach() for k, v in losses.items()}
