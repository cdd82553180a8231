"""The training config schema: the sections as dataclasses (OmegaConf structured configs), their
defaults and documented meanings, and the value rules (ranges, choices, device keys) that
:func:`training.config.load_train_config` enforces and docs/CONFIG.md lists
(:mod:`training.config_reference`)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import torch

from graph.errors import ToolkitError
from pinclip.transforms import AugmentConfig
from sampling.config import PairConfig, PinSageConfig

__all__ = ["TrainConfigError", "AugmentationSection", "DataConfig", "SamplerSection", "ModelSection", "LossSection",
           "OptimConfig", "TrainSection", "EvalConfig", "TrainConfig", "CONFIG_DIR", "RULES", "DEVICE_KEYS",
           "device_syntax_problem"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TrainConfigError(ToolkitError, ValueError):
    """A training config is invalid; the message names the file (or override) and the dotted key."""


@dataclass
class AugmentationSection:
    """The training image augmentations of ``data.augment`` (``pinclip.transforms.AugmentConfig``).

    ``scale``: the random resized crop covers [min, max] of the image area. ``ratio``: its aspect
    ratio range [min, max]. ``hflip``: the probability of a horizontal flip. ``brightness``,
    ``contrast``, ``saturation``: colour jitter, a factor drawn from [1 - s, 1 + s] (0: off)."""
    scale: list[float] = field(default_factory=lambda: list(AugmentConfig.scale))
    ratio: list[float] = field(default_factory=lambda: list(AugmentConfig.ratio))
    hflip: float = AugmentConfig.hflip
    brightness: float = AugmentConfig.brightness
    contrast: float = AugmentConfig.contrast
    saturation: float = AugmentConfig.saturation


@dataclass
class DataConfig:
    """Where pins come from and how their features are fetched.

    ``dataset``: a dataset directory (DESIGN.md format); its graph store is built into
    ``RUN_DIR/graph`` (with ``cold_start_fraction``, ``val_fraction``, ``test_fraction``,
    ``split_seed``). ``graph``: an already built graph store (wins over ``dataset``).
    ``text_cache``: ``auto`` caches the token features of a frozen text tower (fp16, memory-mapped,
    keyed by the pins' text and the tower's weights) under ``cache_dir`` (null:
    ``$PINCLIP_CACHE_DIR`` or ``~/.cache/pinclip``); ``off`` runs the tower (tokenizing in the
    workers). ``num_workers`` DataLoader processes sample, decode and transform; each keeps
    ``prefetch_factor`` batches ready. Pins without an image get a zero image (the normalized
    mean colour) and ``image_missing``; pins without text get the empty caption.
    ``on_bad_image``: what a missing, unreadable, non-regular or oversized image does: ``error``
    (a DataError naming the pin and path) or ``skip`` (treated as a pin without an image; each
    skipped pin is counted and logged once). ``max_image_pixels``: the pixel cap, checked from the
    image header before decoding (width x height). ``augment``: train on augmented images (random
    resized crop, horizontal flip, colour jitter) instead of the evaluation transform;
    ``augmentation``: their strengths (the ``data.augmentation`` section below).
    ``image_root``: the dataset directory the pins' image paths are relative to, when it moved
    since the graph store was built (null: where the store recorded it; a store that moved
    together with its dataset finds it by itself). A root that does not exist is an error naming
    the recorded and the resolved path.
    """
    dataset: Optional[str] = None
    graph: Optional[str] = None
    image_root: Optional[str] = None
    cold_start_fraction: Optional[float] = None
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    split_seed: int = 0
    text_cache: str = "auto"
    cache_dir: Optional[str] = None
    num_workers: int = 2
    prefetch_factor: int = 2
    augment: bool = True
    augmentation: AugmentationSection = field(default_factory=AugmentationSection)
    on_bad_image: str = "error"
    max_image_pixels: int = 50_000_000


@dataclass
class SamplerSection:
    """The neighbor-pair sampler (``sampling.NeighborPairSampler``) on the *training* graph.

    ``pinsage``: the importance walk the positives come from; ``pairs``: positives, shared and hard
    negatives, masks (the ``sampling.config`` schema). ``seed``: the sampling seed (batch b of
    epoch e is drawn from (seed, e, b) only, so resume and worker count do not change it).
    ``device``: null (CPU, in the workers) or a torch device (sampling in the main process).

    ``pinsage``: ``num_random_walks`` walks per seed pin, each of up to ``num_traversals``
    pin -> board -> pin traversals, stopping after each with probability ``termination_prob``; the
    ``num_neighbors`` most visited pins are the seed's importance neighborhood (``weighted``: walk
    in proportion to edge weights).
    ``pairs``: ``num_positives`` positives per seed drawn from that neighborhood, weighted by
    ``positive_weighting`` (``visits``: their visit counts; ``uniform``: 1). ``num_negatives``
    uniform random pins shared by the batch (0: none). ``num_hard_negatives`` per seed, drawn from
    the pins ranked ``hard_rank_range`` (``[lo, hi]``, 0 = most visited) by a longer walk of
    ``hard_num_random_walks`` walks, ``hard_num_traversals`` traversals and
    ``hard_termination_prob`` (``hard_curriculum``: one more hard negative per epoch, starting
    from none). ``mask_shared_boards``: a pin sharing a board with the seed is never its negative
    (else only the same pin and its neighborhood are masked).
    """
    seed: int = 0
    device: Optional[str] = None
    pinsage: PinSageConfig = field(default_factory=PinSageConfig)
    pairs: PairConfig = field(default_factory=lambda: PairConfig(num_positives=2))


@dataclass
class ModelSection:
    """``name``: a registered model config (``pinclip.list_models()``) or a JSON path;
    ``overrides``: deep-merged into it (``model.overrides.vision.layers=2``).
    ``precision``: ``auto`` (bf16 autocast on CUDA, fp32 on CPU), ``fp32``, ``bf16``."""
    name: str = "pinclip-tiny-demo"
    overrides: dict[str, Any] = field(default_factory=dict)
    precision: str = "auto"


@dataclass
class LossSection:
    """Loss weights, applied on top of the model config's ``loss`` section (null keeps it).

    ``image_text``: the image-text loss (``clip``, ``siglip`` or ``none``) and
    ``image_text_weight`` its weight. ``neighbor_fused_weight``, ``neighbor_image_weight``,
    ``neighbor_cross_modal_weight``: the weights of the neighbor-alignment terms on the fused, the
    image and the cross-modal (image <-> text) embeddings; ``neighbor_image_image_weight``: the
    term that aligns a seed's image with its neighbors' images (the image tower alone).
    ``neighbor_weight`` multiplies every neighbor-alignment term (0: the CLIP-only baseline; the
    pins' neighbors are then neither sampled into the batch nor encoded).
    ``use_negatives``: give the sampler's shared and hard negatives to the neighbor loss.
    ``duplicate_text_positives``: pins with the same caption are positives of each other in the
    image-text loss (multi-positive InfoNCE), not negatives.
    """
    image_text: Optional[str] = None
    image_text_weight: Optional[float] = None
    neighbor_weight: float = 1.0
    neighbor_fused_weight: Optional[float] = None
    neighbor_image_weight: Optional[float] = None
    neighbor_cross_modal_weight: Optional[float] = None
    neighbor_image_image_weight: Optional[float] = None
    use_negatives: bool = True
    duplicate_text_positives: bool = True


@dataclass
class OptimConfig:
    """AdamW (no weight decay on gains, biases, embeddings' norms and logit scales) with a linear
    warmup then a cosine decay to ``min_lr`` (``schedule: constant`` keeps ``lr`` after warmup).
    ``warmup_steps``: the warmup length in optimizer steps. ``weight_decay``, ``betas``, ``eps``:
    AdamW's. ``grad_clip``: max global gradient norm (0: off). ``lr_scale``: per-group learning
    rates, a multiplier of ``lr`` (and of the schedule) for the parameters whose name starts with
    a key, e.g. ``{text_proj: 0.1}`` (the longest matching key wins; every key must match a
    trainable parameter); why: a projection initialized to keep a pretrained tower's geometry
    should move slower than modules trained from scratch. ``layer_decay``: layer-wise learning-rate
    decay of the pretrained towers (BEiT / ELECTRA style; 1: off): block i of a tower with depth
    blocks trains at ``lr * layer_decay ** (depth - i)``, its embeddings (and anything else
    before the blocks, e.g. a VLM's vision encoder) at ``layer_decay ** depth``, the layers after
    the blocks and every module outside the towers at ``lr``; it multiplies ``lr_scale``. Why:
    the lowest layers of a pretrained tower hold its most general features."""
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 20
    schedule: str = "cosine"
    grad_clip: float = 1.0
    lr_scale: dict[str, float] = field(default_factory=dict)
    layer_decay: float = 1.0


@dataclass
class TrainSection:
    """``max_steps``: optimizer steps of the run. ``seed``: the seed of the model's initialization
    and of the held-out checks' query draw.
    ``batch_size``: seed pins per optimizer step on each rank (each comes with its sampled
    neighbors and the batch's negatives). ``accum_freq``: the batch is encoded in that many
    micro-batches (open_clip's feature caching), the loss is always the full batch's.
    ``device``: ``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:N`` (under torchrun
    each rank takes ``cuda:LOCAL_RANK``). ``threads``: torch intra-op threads (null: leave).
    ``max_nonfinite_steps``: consecutive skipped steps (non-finite loss or gradient) before the
    run stops with an error. ``log_every``: steps between metrics.jsonl lines;
    ``checkpoint_every``: steps between checkpoints, of which the last ``keep_checkpoints`` are
    kept. ``progress``: show a progress bar. ``tensorboard``: also write TensorBoard event files under
    ``RUN_DIR/tensorboard`` (off by default: needs ``pip install tensorboard``; metrics.jsonl has
    every logged value either way)."""
    seed: int = 0
    max_steps: int = 200
    batch_size: int = 64
    accum_freq: int = 1
    device: str = "auto"
    threads: Optional[int] = None
    log_every: int = 1
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    max_nonfinite_steps: int = 5
    progress: bool = True
    tensorboard: bool = False


@dataclass
class EvalConfig:
    """Quick retrieval checks on held-out data (``training.evaluation.quick_eval``): every ``every_n_steps``
    steps (0: never during training) and at the end (``at_end``). ``max_queries`` caps the
    queries of each metric (null: all). ``k``: the cutoff of the recall@k metrics;
    ``batch_size``: pins per batch when embedding for them."""
    every_n_steps: int = 0
    at_end: bool = True
    batch_size: int = 256
    k: int = 10
    max_queries: Optional[int] = 2000


@dataclass
class TrainConfig:
    data: DataConfig = field(default_factory=DataConfig)
    sampler: SamplerSection = field(default_factory=SamplerSection)
    model: ModelSection = field(default_factory=ModelSection)
    loss: LossSection = field(default_factory=LossSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------- rules
def _range(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if v is None:
            return None
        if isinstance(v, float) and not math.isfinite(v):
            return f"{v!r} is not a finite number"  # NaN passes every comparison below
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '>='} {lo}"
        if hi is not None and (v >= hi if hi_open else v > hi):
            return f"must be {'<' if hi_open else '<='} {hi}"
        return None
    bounds = ([f"{'>' if lo_open else '>='} {lo}"] if lo is not None else []) + \
             ([f"{'<' if hi_open else '<='} {hi}"] if hi is not None else [])
    check.text = ", ".join(bounds)   # for docs/CONFIG.md
    return check


def _choice(*options):
    def check(v):
        return None if v in options else f"must be one of {', '.join(map(repr, options))}"
    check.text = " | ".join(map(str, options))
    return check


def device_syntax_problem(v, allow_auto: bool) -> str | None:
    """Why ``v`` is not a device string at all (whether this machine has it is not checked)."""
    if v is None or (allow_auto and v == "auto"):
        return None
    try:
        torch.device(v)
    except (RuntimeError, TypeError, ValueError):
        return f"{v!r} is not a torch device (cpu, cuda, cuda:N{' or auto' if allow_auto else ''})"
    return None


def _betas(v):
    if len(v) != 2 or not all(0.0 <= b < 1.0 for b in v):
        return "must be [beta1, beta2] with each in [0, 1)"
    return None


_betas.text = "[beta1, beta2], each in [0, 1)"


def _lr_scales(v):
    if not isinstance(v, dict):
        return "must be a mapping {parameter name prefix: multiplier}"
    for prefix, scale in v.items():
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
            return f"the multiplier of {prefix!r} must be a finite number > 0, got {scale!r}"
    return None


_lr_scales.text = "{name prefix: multiplier > 0}"


def _ordered_pair(upper: float | None):
    """[min, max] with 0 < min <= max (<= upper when given): a crop's area share or aspect range."""
    def check(v):
        if len(v) != 2 or not all(math.isfinite(x) for x in v) or not 0.0 < v[0] <= v[1] \
                or (upper is not None and v[1] > upper):
            return f"must be [min, max] with 0 < min <= max{'' if upper is None else f' <= {upper:g}'}"
        return None
    check.text = f"[min, max], 0 < min <= max{'' if upper is None else f' <= {upper:g}'}"
    return check


RULES = {
    "data.cold_start_fraction": _range(0.0, 1.0, hi_open=True),
    "data.val_fraction": _range(0.0, 1.0, hi_open=True),
    "data.test_fraction": _range(0.0, 1.0, hi_open=True),
    "data.text_cache": _choice("auto", "off"),
    "data.on_bad_image": _choice("error", "skip"),
    "data.max_image_pixels": _range(1),
    "data.num_workers": _range(0),
    "data.prefetch_factor": _range(1),
    "data.augmentation.scale": _ordered_pair(1.0),
    "data.augmentation.ratio": _ordered_pair(None),
    "data.augmentation.hflip": _range(0.0, 1.0),
    "data.augmentation.brightness": _range(0.0, 1.0),
    "data.augmentation.contrast": _range(0.0, 1.0),
    "data.augmentation.saturation": _range(0.0, 1.0),
    "model.precision": _choice("auto", "fp32", "bf16"),
    "loss.image_text": lambda v: None if v is None else _choice("clip", "siglip", "none")(v),
    "loss.image_text_weight": _range(0.0),
    "loss.neighbor_weight": _range(0.0),
    "loss.neighbor_fused_weight": _range(0.0),
    "loss.neighbor_image_weight": _range(0.0),
    "loss.neighbor_cross_modal_weight": _range(0.0),
    "loss.neighbor_image_image_weight": _range(0.0),
    "optim.lr": _range(0.0, lo_open=True),
    "optim.min_lr": _range(0.0),
    "optim.weight_decay": _range(0.0),
    "optim.betas": _betas,
    "optim.lr_scale": _lr_scales,
    "optim.layer_decay": _range(0.0, 1.0, lo_open=True),
    "optim.eps": _range(0.0, lo_open=True),
    "optim.warmup_steps": _range(0),
    "optim.schedule": _choice("cosine", "constant"),
    "optim.grad_clip": _range(0.0),
    "train.seed": _range(0),
    "train.max_steps": _range(1),
    "train.batch_size": _range(1),
    "train.accum_freq": _range(1),
    "train.threads": _range(1),
    "train.log_every": _range(1),
    "train.checkpoint_every": _range(1),
    "train.keep_checkpoints": _range(1),
    "train.max_nonfinite_steps": _range(1),
    "eval.every_n_steps": _range(0),
    "eval.batch_size": _range(1),
    "eval.k": _range(1),
    "eval.max_queries": _range(1),
}

# Device keys: whether ``auto`` is allowed. Checked against this machine (graph.devices) unless a
# saved run's config is only read for its data and model (``check_devices=False``).
DEVICE_KEYS = {"sampler.device": False, "train.device": True}
