"""PinCLIP losses. Every module returns a dict of named ``*_loss`` terms (open_clip convention), so
a trainer sums them and adding an objective is additive.

* :func:`clip_loss` / :class:`ClipLoss`: softmax InfoNCE, ``(CE(i->t) + CE(t->i)) / 2``.
* :func:`siglip_loss` / :class:`SigLipLoss`: ``-sum(logsigmoid(labels * logits)) / N``, optionally
  chunked so the N x N logit matrix is never built.
* :func:`neighbor_alignment_loss` / :class:`NeighborAlignmentLoss` (in :mod:`pinclip.neighbor_loss`).
* :class:`PinCLIPLoss`: all of the above, weighted from a :class:`~pinclip.config.LossConfig`,
  over Matryoshka prefixes; returns the weighted terms and their sum ``loss``.

Embeddings are L2-normalized [N, D] float (fp16/bf16 are computed in float32, also inside autocast;
float64 stays float64);
``logit_scale`` is the multiplier itself (already exp'd), ``logit_bias`` the additive bias.
Multi-positive masks are bool [N, N] (single process) or [N_local, N_global] (rows: this rank's
pins; columns: all ranks' pins in rank order), True for matching (image, text) pairs including the
pair itself; they must be symmetric in pin space (pin a's image matches pin b's text iff pin b's
image matches pin a's text: duplicate texts, same board), since the text->image direction reuses them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import LossConfig, PinCLIPConfig
from .distributed import all_gather_no_grad, gather_features, world_info
from .neighbor_loss import (NeighborAlignmentLoss, false_negative_mask_from_ids, fp32, neighbor_alignment_loss,
                            upcast)

__all__ = ["clip_loss", "siglip_loss", "positive_mask_from_ids", "ClipLoss", "SigLipLoss",
           "NeighborAlignmentLoss", "neighbor_alignment_loss", "false_negative_mask_from_ids", "PinCLIPLoss"]


def positive_mask_from_ids(row_ids: torch.Tensor, col_ids: torch.Tensor | None = None) -> torch.Tensor:
    """Multi-positive mask from group ids (a text hash for duplicate captions, a board id for pins
    of one board): [R] and [C] long -> [R, C] bool, True where the ids are equal.
    Ids must be unique per pin unless shared on purpose (use the pin index for ungrouped pins)."""
    col_ids = row_ids if col_ids is None else col_ids
    return row_ids[:, None] == col_ids[None, :]


def _soft_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over rows of cross entropy; with a mask, the target spreads uniformly over the row's
    positives (-mean_p log softmax[p]); a row without positives contributes 0."""
    if mask is None:
        return F.cross_entropy(logits, labels)
    target = mask.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True).clamp_min(1.0)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


@fp32
def _clip_local(image: torch.Tensor, text: torch.Tensor, all_image: torch.Tensor, all_text: torch.Tensor,
                logit_scale, row_offset: int = 0, positive_mask: torch.Tensor | None = None) -> torch.Tensor:
    image, text, all_image, all_text = upcast(image), upcast(text), upcast(all_image), upcast(all_text)
    logits_per_image = logit_scale * image @ all_text.T      # [n, N]
    logits_per_text = logit_scale * text @ all_image.T       # [n, N]
    labels = torch.arange(image.shape[0], device=image.device) + row_offset
    return (_soft_ce(logits_per_image, labels, positive_mask)
            + _soft_ce(logits_per_text, labels, positive_mask)) / 2


def clip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
              positive_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric softmax InfoNCE, as open_clip's ``ClipLoss`` on one process.

    image_emb, text_emb: [N, D] normalized; logit_scale: multiplier (0-dim tensor or float);
    positive_mask: [N, N] bool or None (identity). logits = logit_scale * image_emb @ text_emb.T;
    returns 0-dim ``(CE(logits, arange) + CE(logits.T, arange)) / 2`` (float32; float64 for float64
    inputs).
    """
    return _clip_local(image_emb, text_emb, image_emb, text_emb, logit_scale, 0, positive_mask)


def _siglip_block(image, text, logit_scale, logit_bias, labels) -> torch.Tensor:
    logits = logit_scale * image @ text.T
    if logit_bias is not None:
        logits = logits + logit_bias
    return -F.logsigmoid(labels * logits).sum()


@fp32
def _siglip_local(image: torch.Tensor, all_text: torch.Tensor, logit_scale, logit_bias,
                  row_offset: int = 0, positive_mask: torch.Tensor | None = None,
                  chunk_size: int | None = None) -> torch.Tensor:
    image, all_text = upcast(image), upcast(all_text)
    n, total = image.shape[0], all_text.shape[0]
    rows = torch.arange(n, device=image.device) + row_offset
    chunk = total if not chunk_size else chunk_size
    loss = image.new_zeros(())
    for start in range(0, total, chunk):
        stop = min(start + chunk, total)
        if positive_mask is not None:
            pos = positive_mask[:, start:stop]
        else:
            pos = rows[:, None] == torch.arange(start, stop, device=image.device)[None, :]
        labels = pos.to(image.dtype) * 2 - 1
        block = all_text[start:stop]
        if chunk_size and torch.is_grad_enabled():
            # Why checkpoint: without it autograd keeps every [n, chunk] logit block for backward,
            # which adds up to the full matrix; recomputing one block at a time keeps memory at
            # O(n * chunk).
            loss = loss + checkpoint(_siglip_block, image, block, logit_scale, logit_bias, labels,
                                     use_reentrant=False)
        else:
            loss = loss + _siglip_block(image, block, logit_scale, logit_bias, labels)
    return loss / n


def siglip_loss(image_emb: torch.Tensor, text_emb: torch.Tensor, logit_scale: torch.Tensor | float,
                logit_bias: torch.Tensor | float | None, positive_mask: torch.Tensor | None = None,
                chunk_size: int | None = None) -> torch.Tensor:
    """Pairwise sigmoid loss, as open_clip's ``SigLipLoss`` on one process.

    image_emb, text_emb: [N, D] normalized; logits = logit_scale * image_emb @ text_emb.T + logit_bias;
    labels +1 on the diagonal (or where positive_mask [N, N] is True), -1 elsewhere.
    Returns 0-dim ``-sum(logsigmoid(labels * logits)) / N`` (float32; float64 for float64 inputs). With ``chunk_size`` the text
    side is processed in blocks of that many columns (each block recomputed in backward), so the
    N x N matrix is never materialized.
    """
    return _siglip_local(image_emb, text_emb, logit_scale, logit_bias, 0, positive_mask, chunk_size)


class _GatheringLoss(nn.Module):
    def __init__(self, local_loss: bool = True, gather_with_grad: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.local_loss, self.gather_with_grad = local_loss, gather_with_grad
        self.rank, self.world_size = rank, world_size

    def _gather(self, x: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
        return gather_features(x, self.gather_with_grad, self.local_loss, rank, world_size)

    @staticmethod
    def _mask(n: int, rank: int, world_size: int, positive_mask, positive_ids, local: bool):
        """The mask for this rank's rows: [n, N_global] (local) or [N_global, N_global]."""
        if positive_ids is not None:
            all_ids = all_gather_no_grad(positive_ids, world_size) if world_size > 1 else positive_ids
            return positive_mask_from_ids(positive_ids if local else all_ids, all_ids)
        if positive_mask is None:
            return None
        total = n * world_size
        if positive_mask.shape == (total, total) and local and world_size > 1:
            return positive_mask[rank * n:(rank + 1) * n]
        expected = (n, total) if local else (total, total)
        if positive_mask.shape != expected:
            raise ValueError(f"positive_mask has shape {tuple(positive_mask.shape)}, expected {expected}"
                             + (f" or {(total, total)}" if local else ""))
        return positive_mask


class ClipLoss(_GatheringLoss):
    """open_clip's ``ClipLoss`` with multi-positive masks; returns ``{"clip_loss": ...}``.

    forward(image_emb [n, D], text_emb [n, D], logit_scale, positive_mask=None, positive_ids=None):
    ``positive_ids`` [n] long (group ids, gathered across ranks) is the distributed-friendly way to
    give multi-positives; ``positive_mask`` is [n, N] / [N, N] bool (see module doc).
    """

    def forward(self, image_emb, text_emb, logit_scale, positive_mask=None, positive_ids=None):
        rank, world_size = world_info(self.rank, self.world_size)
        n = image_emb.shape[0]
        local = self.local_loss or world_size == 1
        mask = self._mask(n, rank, world_size, positive_mask, positive_ids, local)
        all_image, all_text = self._gather(image_emb, rank, world_size), self._gather(text_emb, rank, world_size)
        if local:
            loss = _clip_local(image_emb, text_emb, all_image, all_text, logit_scale, rank * n, mask)
        else:
            loss = _clip_local(all_image, all_text, all_image, all_text, logit_scale, 0, mask)
        return {"clip_loss": loss}


class SigLipLoss(_GatheringLoss):
    """Sigmoid loss with learnable bias; returns ``{"siglip_loss": ...}``.

    Distributed: this rank's images against the texts of all ranks (gathered with gradient), which
    gives the same value and gradients as open_clip's neighbour exchange. ``chunk_size`` bounds the
    logit block size (see :func:`siglip_loss`).
    """

    def __init__(self, chunk_size: int | None = None, gather_with_grad: bool = True,
                 rank: int | None = None, world_size: int | None = None):
        super().__init__(True, gather_with_grad, rank, world_size)
        self.chunk_size = chunk_size

    def forward(self, image_emb, text_emb, logit_scale, logit_bias, positive_mask=None, positive_ids=None):
        rank, world_size = world_info(self.rank, self.world_size)
        n = image_emb.shape[0]
        mask = self._mask(n, rank, world_size, positive_mask, positive_ids, True)
        all_text = self._gather(text_emb, rank, world_size)
        loss = _siglip_local(image_emb, all_text, logit_scale, logit_bias, rank * n, mask, self.chunk_size)
        return {"siglip_loss": loss}


def _truncate(x: torch.Tensor | None, dim: int, full: int) -> torch.Tensor | None:
    if x is None or dim == full:
        return x
    return F.normalize(x[..., :dim].float(), dim=-1)


class PinCLIPLoss(nn.Module):
    """The weighted total of image-text and neighbor alignment terms, over Matryoshka prefixes.

    forward(outputs, neighbor_outputs=None, neighbor_weights=None, false_negative_mask=None,
            positive_mask=None, positive_ids=None, negative_outputs=None, negative_mask=None) -> dict
      outputs: the model's forward dict for the seeds ([S, D] ``image_emb``, ``text_emb``,
        ``fused_emb`` and the scales); neighbor_outputs: the model's dict for their neighbors,
        [S*K, D] seed-major; neighbor_weights [S, K]; false_negative_mask [S, S*K] bool;
        negative_outputs: the model's dict for M extra negatives, negative_mask [S, M] bool (see
        :func:`neighbor_alignment_loss`); positive_mask / positive_ids: image-text multi-positives.
    Returns the *weighted* terms ``clip_loss`` or ``siglip_loss``, ``neighbor_fused_loss``,
    ``neighbor_image_loss``, ``neighbor_image_image_loss``, ``neighbor_cross_modal_loss`` (those
    with weight > 0 whose inputs are present) and ``loss``, their sum. Each term is the weighted
    mean of the term over the nested dims ``matryoshka_dims`` (plus the full ``embed_dim``), each
    prefix re-normalized.
    """

    def __init__(self, cfg: LossConfig, embed_dim: int, matryoshka_dims: list[int] | tuple = (),
                 rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed_dim = embed_dim
        dims = list(matryoshka_dims) or [embed_dim]
        weights = list(cfg.matryoshka_weights) if cfg.matryoshka_weights and matryoshka_dims else [1.0] * len(dims)
        if embed_dim not in dims:  # the full embedding is always trained
            dims, weights = dims + [embed_dim], weights + [1.0]
        total = sum(weights)
        self.dims = dims
        self.dim_weights = [w / total for w in weights]
        if cfg.image_text == "clip":
            self.image_text = ClipLoss(cfg.local_loss, cfg.gather_with_grad, rank, world_size)
        elif cfg.image_text == "siglip":
            self.image_text = SigLipLoss(cfg.siglip_chunk_size, cfg.gather_with_grad, rank, world_size)
        else:
            self.image_text = None
        self.neighbor = NeighborAlignmentLoss(cfg.cross_modal, True, cfg.gather_with_grad, rank, world_size)

    @classmethod
    def from_config(cls, cfg: PinCLIPConfig, rank: int | None = None, world_size: int | None = None):
        return cls(cfg.loss, cfg.embed_dim, cfg.matryoshka_dims, rank, world_size)

    def _terms(self, out: dict, nb: dict | None, dim: int, neighbor_weights, false_negative_mask,
               positive_mask, positive_ids, neg: dict | None, negative_mask) -> dict[str, torch.Tensor]:
        cfg, full = self.cfg, self.embed_dim
        t = {k: _truncate(out.get(k), dim, full) for k in ("image_emb", "text_emb", "fused_emb")}
        terms = {}
        if self.image_text is not None and cfg.image_text_weight and t["image_emb"] is not None \
                and t["text_emb"] is not None:
            if cfg.image_text == "clip":
                r = self.image_text(t["image_emb"], t["text_emb"], out["logit_scale"], positive_mask, positive_ids)
            else:
                r = self.image_text(t["image_emb"], t["text_emb"], out["logit_scale"], out["logit_bias"],
                                    positive_mask, positive_ids)
            terms.update({k: cfg.image_text_weight * v for k, v in r.items()})
        weights = {"neighbor_fused_loss": cfg.neighbor_fused_weight,
                   "neighbor_image_loss": cfg.neighbor_image_weight,
                   "neighbor_image_image_loss": cfg.neighbor_image_image_weight,
                   "neighbor_cross_modal_loss": cfg.neighbor_cross_modal_weight if cfg.cross_modal else 0.0}
        if nb is not None and neighbor_weights is not None and any(weights.values()) \
                and t["fused_emb"] is not None and nb.get("fused_emb") is not None:
            n = {k: _truncate(nb.get(k), dim, full) for k in ("image_emb", "text_emb", "fused_emb")}
            cross = bool(weights["neighbor_cross_modal_loss"])
            image_image = bool(weights["neighbor_image_image_loss"])
            r = self.neighbor(
                t["fused_emb"], n["fused_emb"], neighbor_weights, false_negative_mask,
                out["neighbor_logit_scale"],
                seed_image=t["image_emb"] if (cross or image_image) else None,
                neighbor_image=n["image_emb"] if (weights["neighbor_image_loss"] or cross or image_image) else None,
                seed_text=t["text_emb"] if cross else None,
                neighbor_text=n["text_emb"] if cross else None,
                negatives=None if neg is None else {
                    key: _truncate(neg.get(key), dim, full) for key in ("image_emb", "text_emb", "fused_emb")},
                negative_mask=negative_mask, fused_image=bool(weights["neighbor_image_loss"]),
                image_image=image_image)
            terms.update({k: weights[k] * v for k, v in r.items() if weights[k]})
        return terms

    def forward(self, outputs: dict, neighbor_outputs: dict | None = None,
                neighbor_weights: torch.Tensor | None = None, false_negative_mask: torch.Tensor | None = None,
                positive_mask: torch.Tensor | None = None, positive_ids: torch.Tensor | None = None,
                negative_outputs: dict | None = None, negative_mask: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        result: dict[str, torch.Tensor] = {}
        for dim, w in zip(self.dims, self.dim_weights):
            for k, v in self._terms(outputs, neighbor_outputs, dim, neighbor_weights, false_negative_mask,
                                    positive_mask, positive_ids, negative_outputs, negative_mask).items():
                result[k] = result[k] + w * v if k in result else w * v
        if not result:
            raise ValueError("PinCLIPLoss: no term could be computed (missing embeddings or all weights 0)")
        result["loss"] = sum(result.values())
        return result
