"""Neighbor alignment: pull a seed pin's embedding toward the pins its random walks visited.

See :func:`neighbor_alignment_loss` for the exact semantics. Importable from :mod:`pinclip.losses`.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn

from .distributed import all_gather_no_grad, gather_features, world_info

__all__ = ["neighbor_alignment_loss", "neighbor_infonce", "NeighborAlignmentLoss", "false_negative_mask_from_ids",
           "fp32", "upcast"]

# A finite "minus infinity": exp() of it is 0 in float32, yet logsumexp over a row made only of it
# stays finite, so its gradient is 0 rather than NaN (a seed can have no negatives at all).
_MASKED = -1e9


def fp32(fn):
    """Run a loss in float32 even inside an autocast region: logits of unit vectors times a scale of
    up to 100 lose the ranking signal in bf16, and the matrices are small next to the towers."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        devices = {a.device.type for a in args if isinstance(a, torch.Tensor)} or {"cpu"}
        with contextlib.ExitStack() as stack:
            for device in devices:
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return fn(*args, **kwargs)
    return wrapper


def upcast(x: torch.Tensor) -> torch.Tensor:
    """fp16/bf16 -> float32; float32 and float64 stay as they are (so float64 gradchecks work)."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _flatten_neighbors(x: torch.Tensor, s: int, k: int, name: str) -> torch.Tensor:
    if x.dim() == 3:
        if x.shape[:2] != (s, k):
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected [{s}, {k}, D] or [{s * k}, D]")
        return x.reshape(s * k, -1)
    if x.dim() != 2 or x.shape[0] != s * k:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected [{s}, {k}, D] or [{s * k}, D]")
    return x


def false_negative_mask_from_ids(seed_ids: torch.Tensor, neighbor_ids: torch.Tensor) -> torch.Tensor:
    """A false-negative mask from pin ids, for samplers that do not provide one.

    seed_ids: [S] long; neighbor_ids: [S, K] long (-1 = padding). Returns [S, S*K] bool, True where
    neighbor column c (pin ``neighbor_ids.flatten()[c]``) is seed s itself or one of seed s's own
    neighbors (the same pin sampled for another seed): such a column is no negative for s.
    """
    cols = neighbor_ids.reshape(-1)
    same_as_seed = cols[None, :] == seed_ids[:, None]
    in_own = (neighbor_ids[:, :, None] == cols[None, None, :]).any(dim=1)
    return (same_as_seed | in_own) & (cols >= 0)[None, :]


@fp32
def neighbor_infonce(queries: torch.Tensor, keys: torch.Tensor, neighbor_weights: torch.Tensor,
                     valid_columns: torch.Tensor, false_negative_mask: torch.Tensor | None,
                     logit_scale: torch.Tensor | float, seed_offset: int = 0,
                     num_valid_seeds: int | None = None, world_size: int = 1,
                     exclude_own_neighbors: bool = True, extra_keys: torch.Tensor | None = None,
                     extra_mask: torch.Tensor | None = None) -> torch.Tensor:
    """One neighbor InfoNCE term on already-gathered keys (the building block; see
    :func:`neighbor_alignment_loss` for the semantics).

    queries: [S, D] (this rank's seeds); keys: [C, D] with C = world_size * S * K, neighbors of all
    seeds of all ranks, seed-major; neighbor_weights: [S, K] float (this rank's seeds);
    valid_columns: [C] bool (False = padded neighbor); false_negative_mask: [S, C] bool or None;
    seed_offset: global index of this rank's first seed; num_valid_seeds: seeds of all ranks with at
    least one neighbor (default: this rank's); extra_keys: [M, D] additional negatives (shared and
    hard negatives) with extra_mask [S, M] bool (True: not a negative for that seed).
    Returns a 0-dim tensor (float32, or float64 for float64 inputs).
    """
    s, k = neighbor_weights.shape
    c = keys.shape[0]
    if isinstance(logit_scale, torch.Tensor):
        logit_scale = upcast(logit_scale)
    queries, keys = upcast(queries), upcast(keys)
    logits = logit_scale * queries @ keys.to(queries.dtype).T                     # [S, C]
    own_cols = ((seed_offset + torch.arange(s, device=logits.device))[:, None] * k
                + torch.arange(k, device=logits.device)[None, :])                  # [S, K]
    own_logits = logits.gather(1, own_cols)                                        # [S, K]

    negatives = valid_columns[None, :].expand(s, c).clone()
    if false_negative_mask is not None:
        negatives &= ~false_negative_mask
    own_allowed = negatives.gather(1, own_cols)                                    # [S, K]
    negatives.scatter_(1, own_cols, False)  # the own block is handled per row below
    negative_logits = logits.masked_fill(~negatives, _MASKED)
    if extra_keys is not None:
        extra = logit_scale * queries @ upcast(extra_keys).to(queries.dtype).T    # [S, M]
        if extra_mask is not None:
            extra = extra.masked_fill(extra_mask, _MASKED)
        negative_logits = torch.cat([negative_logits, extra], dim=1)
    base_lse = torch.logsumexp(negative_logits, dim=1)                            # [S]

    # Row (s, k): the positive itself, plus the seed's other neighbors only when they count as
    # negatives (exclude_own_neighbors=False), plus every other-seed negative (base_lse).
    eye = torch.eye(k, dtype=torch.bool, device=logits.device)[None]
    include = eye if exclude_own_neighbors else eye | own_allowed[:, None, :]
    own_part = own_logits[:, None, :].expand(s, k, k).masked_fill(~include, _MASKED)
    row_lse = torch.logsumexp(torch.cat([base_lse[:, None, None].expand(s, k, 1), own_part], dim=2), dim=2)
    row_loss = row_lse - own_logits                                                # [S, K]

    w = neighbor_weights.to(logits.dtype).clamp_min(0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    if num_valid_seeds is None:
        num_valid_seeds = int((neighbor_weights > 0).any(dim=1).sum())
    total = torch.where(w > 0, w * row_loss, torch.zeros_like(row_loss)).sum()
    # Why world_size: the mean over ranks of this value is the single-process loss.
    return total * world_size / max(num_valid_seeds, 1)


def neighbor_alignment_loss(seed_fused: torch.Tensor, neighbor_fused: torch.Tensor,
                            neighbor_weights: torch.Tensor, false_negative_mask: torch.Tensor | None,
                            logit_scale: torch.Tensor | float,
                            seed_image: torch.Tensor | None = None, neighbor_image: torch.Tensor | None = None,
                            seed_text: torch.Tensor | None = None, neighbor_text: torch.Tensor | None = None,
                            cross_modal: bool = True, *, fused_image: bool = True, image_image: bool = False,
                            negatives: dict | None = None,
                            negative_mask: torch.Tensor | None = None, exclude_own_neighbors: bool = True,
                            gather_with_grad: bool = True, rank: int | None = None,
                            world_size: int = 1) -> dict[str, torch.Tensor]:
    """Neighbor alignment InfoNCE with in-batch negatives, weighted by visit counts.

    Shapes: S seeds, K neighbor slots per seed, D dims; embeddings L2-normalized float.
      seed_fused [S, D]; neighbor_fused [S, K, D] or [S*K, D] (seed-major: row s*K+k is the k-th
      neighbor of seed s); neighbor_weights [S, K] float visit counts, 0 = padding slot;
      false_negative_mask [S, S*K] bool or None (True: that neighbor column is not a negative for
      that seed, e.g. it is the same pin or shares a board); logit_scale: the multiplier (exp'd).

    Semantics, for each term with queries q (one per seed) and keys v (one per neighbor slot):
      * every pair (s, k) with weight > 0 is a row; its logits are ``logit_scale * q[s] . v[c]``
        over all columns c, and its target is column s*K+k;
      * the negatives of the row are all other neighbor columns of the batch, except padded slots,
        columns with ``false_negative_mask[s, c]``, and (``exclude_own_neighbors``, default) the
        seed's other neighbors, which are positives too; the target always stays in the softmax;
      * row loss = ``-log softmax(logits over {target} + negatives)[target]``;
      * rows are weighted by normalized visit count ``w[s,k] / sum_k w[s,k]`` (each seed with at
        least one neighbor counts once) and the sum is divided by the number of such seeds.

    Extra negatives (optional; the sampler's shared random and hard negatives): ``negatives`` is
    a dict of [M, D] embeddings keyed like the model's outputs (``fused_emb``, ``image_emb``,
    ``text_emb``); each term takes the modality of its keys (fused term: ``fused_emb``; terms
    against neighbor images: ``image_emb``; against neighbor texts: ``text_emb``) and a term whose
    modality is missing gets none. ``negative_mask`` [S, M] bool, True where column m is not a
    negative for seed s (a false negative, or padding such as a -1 hard negative). Per-seed hard
    negatives [S, H] go in flattened (M = S*H); other seeds' hard negatives then count as plain
    random negatives unless masked.

    Terms (dict keys; a term is present when its inputs are):
      ``neighbor_fused_loss``: seed_fused vs neighbor_fused;
      ``neighbor_image_loss`` (if ``fused_image``): seed_fused vs neighbor_image (content-only
      side, for cold start; ``fused_image=False`` skips it when neighbor_image is given for the
      other terms only);
      ``neighbor_cross_modal_loss`` (if ``cross_modal``): mean of seed_image vs neighbor_text and
      seed_text vs neighbor_image, over the pairs whose inputs are given;
      ``neighbor_image_image_loss`` (if ``image_image``): seed_image vs neighbor_image, the image
      tower alone learning what the pictures of neighbors share (a visual component no caption
      names; the other terms reach the image through text or the fused vector).

    Distributed (``world_size`` > 1, used by :class:`NeighborAlignmentLoss`): neighbor keys, weights
    are gathered from all ranks (keys with gradient if ``gather_with_grad``); columns are global,
    ``rank * S * K + ...``; a [S, S*K] false_negative_mask covers this rank's columns only (other
    ranks' columns are not masked), a [S, world_size*S*K] mask covers all; extra negatives are
    gathered too, with the same rule for a [S, M] / [S, world_size*M] negative_mask. The mean over
    ranks of the returned values equals the single-process loss on the concatenated batch.
    Returns {name: 0-dim tensor} (float32; float64 for float64 inputs).
    """
    s, k = neighbor_weights.shape
    if seed_fused.shape[0] != s:
        raise ValueError(f"seed_fused has {seed_fused.shape[0]} rows but neighbor_weights has {s} seeds")
    rank, world_size = world_info(rank, world_size) if world_size != 1 else (0, 1)

    def gather(x: torch.Tensor) -> torch.Tensor:
        return gather_features(x, gather_with_grad, True, rank, world_size)

    weights_all = all_gather_no_grad(neighbor_weights, world_size) if world_size > 1 else neighbor_weights
    valid_columns = (weights_all > 0).reshape(-1)
    num_valid_seeds = int((weights_all > 0).any(dim=1).sum())
    c = world_size * s * k
    fn = false_negative_mask
    if fn is not None:
        fn = fn.to(torch.bool)
        if fn.shape == (s, s * k) and world_size > 1:
            full = torch.zeros(s, c, dtype=torch.bool, device=fn.device)
            full[:, rank * s * k:(rank + 1) * s * k] = fn
            fn = full
        elif fn.shape != (s, c):
            raise ValueError(f"false_negative_mask has shape {tuple(fn.shape)}, expected [{s}, {s * k}]"
                             + (f" or [{s}, {c}]" if world_size > 1 else ""))

    negatives = {key: v for key, v in (negatives or {}).items() if v is not None}
    extra_mask = None
    if negatives:
        m = next(iter(negatives.values())).shape[0]
        if negative_mask is not None:
            extra_mask = negative_mask.to(torch.bool)
            if extra_mask.shape == (s, m) and world_size > 1:
                full = torch.zeros(s, world_size * m, dtype=torch.bool, device=extra_mask.device)
                full[:, rank * m:(rank + 1) * m] = extra_mask
                extra_mask = full
            elif extra_mask.shape != (s, world_size * m):
                raise ValueError(f"negative_mask has shape {tuple(negative_mask.shape)}, expected [{s}, {m}]"
                                 + (f" or [{s}, {world_size * m}]" if world_size > 1 else ""))
    gathered_negatives: dict[str, torch.Tensor] = {}

    def extra(modality: str) -> torch.Tensor | None:
        if modality not in negatives:
            return None
        if modality not in gathered_negatives:
            gathered_negatives[modality] = gather(negatives[modality])
        return gathered_negatives[modality]

    gathered_keys: dict[str, torch.Tensor] = {}   # neighbor_image serves up to three terms: gather it once

    def term(queries: torch.Tensor, keys: torch.Tensor, name: str, modality: str) -> torch.Tensor:
        if name not in gathered_keys:
            gathered_keys[name] = gather(_flatten_neighbors(keys, s, k, name))
        keys = gathered_keys[name]
        return neighbor_infonce(queries, keys, neighbor_weights, valid_columns, fn, logit_scale,
                                seed_offset=rank * s, num_valid_seeds=num_valid_seeds,
                                world_size=world_size, exclude_own_neighbors=exclude_own_neighbors,
                                extra_keys=extra(modality), extra_mask=extra_mask)

    out = {"neighbor_fused_loss": term(seed_fused, neighbor_fused, "neighbor_fused", "fused_emb")}
    if fused_image and neighbor_image is not None:
        out["neighbor_image_loss"] = term(seed_fused, neighbor_image, "neighbor_image", "image_emb")
    if image_image and seed_image is not None and neighbor_image is not None:
        out["neighbor_image_image_loss"] = term(seed_image, neighbor_image, "neighbor_image", "image_emb")
    if cross_modal:
        parts = []
        if seed_image is not None and neighbor_text is not None:
            parts.append(term(seed_image, neighbor_text, "neighbor_text", "text_emb"))
        if seed_text is not None and neighbor_image is not None:
            parts.append(term(seed_text, neighbor_image, "neighbor_image", "image_emb"))
        if parts:
            out["neighbor_cross_modal_loss"] = sum(parts) / len(parts)
    return out


class NeighborAlignmentLoss(nn.Module):
    """Module form of :func:`neighbor_alignment_loss` that gathers across ranks when
    ``torch.distributed`` is initialized (or ``world_size`` is given). Returns the dict of terms."""

    def __init__(self, cross_modal: bool = True, exclude_own_neighbors: bool = True,
                 gather_with_grad: bool = True, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        self.cross_modal = cross_modal
        self.exclude_own_neighbors = exclude_own_neighbors
        self.gather_with_grad = gather_with_grad
        self.rank, self.world_size = rank, world_size

    def forward(self, seed_fused, neighbor_fused, neighbor_weights, false_negative_mask, logit_scale,
                seed_image=None, neighbor_image=None, seed_text=None, neighbor_text=None,
                negatives=None, negative_mask=None, fused_image: bool = True,
                image_image: bool = False) -> dict[str, torch.Tensor]:
        rank, world_size = world_info(self.rank, self.world_size)
        return neighbor_alignment_loss(
            seed_fused, neighbor_fused, neighbor_weights, false_negative_mask, logit_scale,
            seed_image, neighbor_image, seed_text, neighbor_text, cross_modal=self.cross_modal,
            fused_image=fused_image, image_image=image_image, negatives=negatives, negative_mask=negative_mask,
            exclude_own_neighbors=self.exclude_own_neighbors, gather_with_grad=self.gather_with_grad,
            rank=rank, world_size=world_size)
