"""The optimizer and learning-rate schedule of a training run: AdamW with parameter groups (no
weight decay on 0/1-d parameters, ``optim.lr_scale`` multipliers) and warmup + cosine decay."""
from __future__ import annotations

import math
from typing import Any

import torch

from training.config_schema import TrainConfigError

__all__ = ["build_optimizer", "cosine_lr_lambda", "layer_decay_scales"]


def layer_decay_scales(model: torch.nn.Module, decay: float) -> dict[int, float]:
    """{id(parameter): lr multiplier} of layer-wise decay over the model's towers (``visual``,
    ``text`` and ``vlm``, each with ``blocks()`` and ``after_blocks()``): block i (1-based) of
    depth blocks gets ``decay ** (depth - i)``, the modules after the blocks 1, the rest of the
    tower (embeddings, a VLM's vision encoder) ``decay ** depth``. Empty when decay is 1."""
    if decay == 1.0:
        return {}
    scales: dict[int, float] = {}
    for name in ("visual", "text", "vlm"):
        tower = getattr(model, name, None)
        if tower is None or not hasattr(tower, "blocks"):
            continue
        blocks = list(tower.blocks())
        depth = len(blocks)
        for i, block in enumerate(blocks, start=1):
            for p in block.parameters():
                scales[id(p)] = decay ** (depth - i)
        for module in tower.after_blocks():
            for p in (module.parameters() if module is not None else ()):
                scales[id(p)] = 1.0
        for p in tower.parameters():
            scales.setdefault(id(p), decay ** depth)
    return scales


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW; no weight decay on 0/1-d parameters (gains, biases, logit scales), as open_clip.

    ``cfg.lr_scale`` ({name prefix: multiplier}) gives parameter groups their own learning rate
    (``lr * multiplier``; the scheduler's multiplier applies to every group alike). Group 0 is
    always the unscaled decay group, so ``param_groups[0]["lr"]`` is the run's base lr.
    ``cfg.layer_decay`` (< 1) multiplies the towers' parameters' rates by
    :func:`layer_decay_scales`."""
    scales = {str(k): float(v) for k, v in dict(getattr(cfg, "lr_scale", None) or {}).items()}
    for prefix, value in scales.items():
        if not value > 0:
            raise TrainConfigError(f"optim.lr_scale.{prefix} must be > 0, got {value}")
    layer = layer_decay_scales(model, float(getattr(cfg, "layer_decay", 1.0)))
    matched: set[str] = set()
    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [k for k in scales if name == k or name.startswith(k + ".")]
        key = max(hits, key=len) if hits else None
        if key is not None:
            matched.add(key)
        decay = not (p.ndim < 2 or "logit_scale" in name or "logit_bias" in name)
        scale = (scales[key] if key else 1.0) * layer.get(id(p), 1.0)
        groups.setdefault((decay, scale), []).append(p)
    unmatched = sorted(set(scales) - matched)
    if unmatched:
        tops = sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})
        raise TrainConfigError(f"key optim.lr_scale: {unmatched} match(es) no trainable parameter (trainable modules: {tops})")
    lr = float(cfg.lr)
    param_groups = [{"params": params, "weight_decay": float(cfg.weight_decay) if decay else 0.0, "lr": lr * scale}
                    for (decay, scale), params in groups.items() if params or scale == 1.0]
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(float(b) for b in cfg.betas), eps=float(cfg.eps))


def cosine_lr_lambda(lr: float, min_lr: float, warmup: int, max_steps: int, schedule: str = "cosine"):
    """Multiplier of ``lr`` at a step: linear warmup ((s + 1) / warmup), then cosine to min_lr."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(1, max_steps - warmup)
        progress = min(1.0, (s - warmup) / span)
        return (min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)) / lr
    return f
