"""Training configs: a dataclass schema (OmegaConf structured configs), YAML files, ``key=value``
overrides, strict validation.

    from training.config import load_train_config, save_train_config
    cfg = load_train_config("training/configs/demo.yaml", ["data.dataset=/data/world", "train.max_steps=40"])

Sections: ``data``, ``sampler``, ``model``, ``loss``, ``optim``, ``train``, ``eval``. A YAML file
holds any subset of the keys; the rest keep the schema defaults. A file may name a ``base:`` file
(relative to itself, or a shipped config name such as ``demo`` when no such file is beside it)
that it is merged on top of (``clip_only.yaml`` is ``demo.yaml`` with the neighbor terms off).
Every key, its type, default and meaning: docs/CONFIG.md, generated from this schema by
:func:`config_reference_markdown` (``pinclip config docs``). Overrides are OmegaConf dotlist
items, values parsed as YAML.

Every problem raises :class:`TrainConfigError` naming the file (or, when the value at fault came
from a ``key=value`` override, that override) and the dotted key: unknown keys (with the closest
known key), values of the wrong type, values out of range, floats that are NaN or infinite (any
float key: NaN compares false in every range check and would otherwise slip through to NaN
weights), device strings this machine cannot use. The key, YAML and override checks are the
shared strict-config helpers of :mod:`configkit.strict`.
The model architecture (``model.name`` + ``model.overrides``) is validated by the model library
(``pinclip.config``) and the sampler sections by ``sampling.config``, so their rules and messages
are the ones of those packages. The resolved config is written to ``RUN_DIR/config.yaml``.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from configkit.strict import (blamed_override, dataclass_keys, key_in_message, nonfinite_floats, read_yaml_mapping,
                              split_override, unknown_key_error)
from graph.atomic import atomic_write_bytes
from graph.devices import device_problem
from graph.errors import ToolkitError
from pinclip.config import ConfigFileMissingError, config_from_dict, merge_overrides
from pinclip.config import config_to_dict as model_config_to_dict
from pinclip.factory import get_model_config
from sampling.config import PairConfig, PinSageConfig, SamplerConfigError
from sampling.config import config_from_dict as sampler_config_from_dict

__all__ = ["TrainConfigError", "DataConfig", "SamplerSection", "ModelSection", "LossSection",
           "OptimConfig", "TrainSection", "EvalConfig", "TrainConfig", "load_train_config",
           "save_train_config", "config_to_dict", "resolve_model_config", "sampler_config", "CONFIG_DIR",
           "list_train_configs", "config_reference_markdown"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


class TrainConfigError(ToolkitError, ValueError):
    """A training config is invalid; the message names the file (or override) and the dotted key."""


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
    resized crop, horizontal flip, colour jitter) instead of the evaluation transform.
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
    image and the cross-modal (image <-> text) embeddings.
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
    should move slower than modules trained from scratch."""
    lr: float = 1e-3
    min_lr: float = 0.0
    weight_decay: float = 0.05
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    warmup_steps: int = 20
    schedule: str = "cosine"
    grad_clip: float = 1.0
    lr_scale: dict[str, float] = field(default_factory=dict)


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


def _device_syntax_problem(v, allow_auto: bool) -> str | None:
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


_RULES = {
    "data.cold_start_fraction": _range(0.0, 1.0, hi_open=True),
    "data.val_fraction": _range(0.0, 1.0, hi_open=True),
    "data.test_fraction": _range(0.0, 1.0, hi_open=True),
    "data.text_cache": _choice("auto", "off"),
    "data.on_bad_image": _choice("error", "skip"),
    "data.max_image_pixels": _range(1),
    "data.num_workers": _range(0),
    "data.prefetch_factor": _range(1),
    "model.precision": _choice("auto", "fp32", "bf16"),
    "loss.image_text": lambda v: None if v is None else _choice("clip", "siglip", "none")(v),
    "loss.image_text_weight": _range(0.0),
    "loss.neighbor_weight": _range(0.0),
    "loss.neighbor_fused_weight": _range(0.0),
    "loss.neighbor_image_weight": _range(0.0),
    "loss.neighbor_cross_modal_weight": _range(0.0),
    "optim.lr": _range(0.0, lo_open=True),
    "optim.min_lr": _range(0.0),
    "optim.weight_decay": _range(0.0),
    "optim.betas": _betas,
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
_DEVICE_KEYS = {"sampler.device": False, "train.device": True}


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _blame(where: str, overrides: Sequence[tuple[str, str]], *keys: str) -> str:
    """The message prefix for a problem with ``keys`` (most specific first): the last override
    that set one of them, a section holding it or a key inside it (``override 'optim.lr=nan': ``),
    else ``where`` (the file, or "" for a dict)."""
    item = blamed_override(overrides, *keys)   # list items (optim.betas[1]) belong to their list key
    return where if item is None else f"override {item!r}: "


def _validate(cfg: DictConfig, where: str, overrides: Sequence[tuple[str, str]] = (),
              check_devices: bool = True) -> None:
    """Raise TrainConfigError for the first problem of ``cfg``. overrides: (dotted key, item) of
    the command-line overrides applied, in order, so a problem they caused names them."""
    # Every float, in every section (model.overrides included): one walk, not a rule per key.
    for key, value in nonfinite_floats(OmegaConf.to_container(cfg, resolve=True)):
        raise TrainConfigError(f"{_blame(where, overrides, key)}key '{key}': {value!r} is not a finite number")
    for key, rule in _RULES.items():
        value = _get(cfg, key)
        if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        problem = rule(value)
        if problem:
            raise TrainConfigError(f"{_blame(where, overrides, key)}key '{key}' = {value!r}: {problem}")
    for key, allow_auto in _DEVICE_KEYS.items():
        value = _get(cfg, key)
        if check_devices:
            problem = device_problem(value, allow_auto=allow_auto)
            if problem and problem.startswith(f"{value!r}: "):
                problem = problem[len(f"{value!r}: "):]   # the message shows the value already
        else:
            problem = _device_syntax_problem(value, allow_auto)
        if problem:
            raise TrainConfigError(f"{_blame(where, overrides, key)}key '{key}' = {value!r}: {problem}")
    if cfg.data.val_fraction + cfg.data.test_fraction >= 1.0:
        raise TrainConfigError(f"{_blame(where, overrides, 'data.val_fraction', 'data.test_fraction')}keys "
                               "'data.val_fraction' + 'data.test_fraction' must be < 1")
    if cfg.optim.min_lr > cfg.optim.lr:
        raise TrainConfigError(f"{_blame(where, overrides, 'optim.min_lr', 'optim.lr')}key 'optim.min_lr' = "
                               f"{cfg.optim.min_lr} must be <= optim.lr = {cfg.optim.lr}")
    # The sampler sections follow the sampling package's own rules (and its messages). Its device
    # was checked above (or deliberately not: check_devices=False).
    try:
        sampler_config_from_dict(_sampler_dict(cfg, device=cfg.sampler.device if check_devices else None))
    except SamplerConfigError as exc:
        # Their keys are relative to the section: name them in full.
        msg = str(exc).replace("key '", "key 'sampler.")
        key = key_in_message(msg)
        raise TrainConfigError(_blame(where, overrides, *([key] if key else [])) + msg) from None
    try:
        resolve_model_config(cfg)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        # The model library names keys of the model config: model.overrides.KEY, or the loss
        # section for loss.KEY; a message naming no key is about model.name.
        key = key_in_message(str(msg))
        if key:
            keys = [f"model.overrides.{key}"] + ([f"loss.{key[len('loss.'):]}"] if key.startswith("loss.") else [])
        else:
            keys = ["model.name"]
        raise TrainConfigError(f"{_blame(where, overrides, *keys)}model (model.name={cfg.model.name!r} + "
                               f"model.overrides + loss): {msg}") from None


def sampler_config(cfg: Any):
    """The ``sampling.SamplerConfig`` (kind ``pairs``) of a training config's ``sampler`` section."""
    return sampler_config_from_dict(_sampler_dict(cfg, cfg.sampler.device))


def _sampler_dict(cfg: Any, device: str | None) -> dict:
    s = cfg.sampler
    return {"name": "train", "kind": "pairs", "seed": int(s.seed), "device": device,
            "exclude_splits": ["val", "test", "cold_start"],
            "pinsage": _container(s.pinsage), "pairs": _container(s.pairs)}


def _container(x: Any) -> Any:
    if isinstance(x, DictConfig) or OmegaConf.is_list(x):
        return OmegaConf.to_container(x, resolve=True)
    if hasattr(x, "__dataclass_fields__"):
        return dataclasses.asdict(x)
    return copy.deepcopy(x)


def loss_overrides(cfg: Any, base_loss: dict) -> dict:
    """The model config ``loss`` keys set by the ``loss`` section (``base_loss``: the model's)."""
    s = cfg.loss
    out: dict[str, Any] = {}
    if s.image_text is not None:
        out["image_text"] = s.image_text
    if s.image_text_weight is not None:
        out["image_text_weight"] = float(s.image_text_weight)
    for key in ("neighbor_fused_weight", "neighbor_image_weight", "neighbor_cross_modal_weight"):
        value = getattr(s, key)
        value = float(base_loss.get(key, 0.0) if value is None else value)
        if s.neighbor_weight != 1.0 or getattr(s, key) is not None:
            out[key] = value * float(s.neighbor_weight)
    return out


def resolve_model_config(cfg: Any):
    """The ``pinclip.PinCLIPConfig`` of ``model.name`` + ``model.overrides`` + the ``loss`` section.

    Raises ``pinclip.ConfigError`` (a ValueError) naming the bad key, KeyError for an unknown name.
    """
    name = str(cfg.model.name)
    if name.endswith(".json"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise ConfigFileMissingError(f"model.name: model config file {path} does not exist")
        base, label = json.loads(path.read_text()), path.stem
        base.pop("name", None)
    else:
        base, label = model_config_to_dict(get_model_config(name)), name
        base.pop("name", None)
    merged = merge_overrides(base, _container(cfg.model.overrides) or {})
    merged.setdefault("loss", {})
    if isinstance(merged["loss"], dict):
        merged["loss"] = merge_overrides(merged["loss"], loss_overrides(cfg, merged["loss"]))
    return config_from_dict(merged, label)


# ---------------------------------------------------------------------------------- loading
def _format_omegaconf_error(exc: OmegaConfBaseException, where: str, key: str = "?") -> TrainConfigError:
    key = getattr(exc, "full_key", None) or key
    msg = getattr(exc, "msg", None) or str(exc)
    msg = msg.split("\n")[0]
    if "not in" in msg and "Key" in msg:
        # The schema's keys, not OmegaConf's wording: "(did you mean 'train.max_steps'?)" as in
        # the sampling and model configs.
        section, _, leaf = str(key).rpartition(".")
        known = dataclass_keys(TrainConfig, section)
        if known is not None:
            return unknown_key_error(leaf, known, prefix=f"{section}." if section else "", where=where,
                                     error=TrainConfigError)
        return TrainConfigError(f"{where}unknown key '{key}': {msg}")
    return TrainConfigError(f"{where}key '{key}': {msg}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML config file as a plain dict, with its ``base:`` chain merged underneath."""
    path = path.expanduser().resolve()
    if path in seen:
        raise TrainConfigError(f"{path}: 'base' chain loops back to itself")
    data = read_yaml_mapping(path, TrainConfigError)
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _read_yaml(_base_path(base, path), seen + (path,))
    return OmegaConf.to_container(OmegaConf.merge(OmegaConf.create(parent), OmegaConf.create(data)))


def _base_path(base: Any, path: Path) -> Path:
    """The file a ``base:`` entry of the config file ``path`` names: an absolute path; else a path
    relative to ``path``'s folder (``.yaml`` may be left off); else, when no such file exists
    there (or that file is ``path`` itself), a shipped config (``base: demo`` or
    ``base: demo.yaml``), so a copied config keeps working outside ``training/configs``."""
    if not isinstance(base, str) or not base.strip():
        raise TrainConfigError(f"{path}: key 'base' = {base!r}: expected a config file path or a shipped "
                               f"config name ({', '.join(list_train_configs())})")
    given = Path(base).expanduser()
    if given.is_absolute():
        if given.is_file():
            return given
        raise TrainConfigError(f"{path}: key 'base' = {base!r}: no such file")
    beside = path.parent / given
    shipped = None
    if len(given.parts) == 1:
        shipped = CONFIG_DIR / f"{given.stem if given.suffix in ('.yaml', '.yml') else given.name}.yaml"
        shipped = shipped if shipped.is_file() else None
    for candidate in (beside, *(() if given.suffix else (beside.with_name(beside.name + ".yaml"),))):
        if candidate.is_file():
            # A demo.yaml that says base: demo means the shipped one; a file naming itself loops.
            return shipped if shipped is not None and candidate.resolve() == path.resolve() else candidate
    if shipped is not None:
        return shipped
    raise TrainConfigError(f"{path}: key 'base' = {base!r}: no file {beside} and not a shipped config "
                           f"({', '.join(list_train_configs())})")


def list_train_configs() -> list[str]:
    """Names of the shipped configs (``training/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _resolve_path(source: str | os.PathLike) -> Path:
    path = Path(source)
    if path.exists() or path.suffix:
        return path
    shipped = CONFIG_DIR / f"{source}.yaml"
    if shipped.exists():
        return shipped
    raise TrainConfigError(f"config {str(source)!r}: no such file and not a shipped config "
                           f"({', '.join(list_train_configs())})")


def load_train_config(source: str | os.PathLike | dict | DictConfig | None = None,
                      overrides: Sequence[str] | None = None, *, check_devices: bool = True) -> DictConfig:
    """Load and validate a training config.

    source: a YAML path, a shipped config name (``demo``), a dict / DictConfig, or None (the
    schema defaults). overrides: ``["train.max_steps=40", ...]``; a problem an override caused
    names the override. check_devices: False when a saved run's config is read only for its data
    and model (embed, evaluate, possibly on another machine): ``train.device`` and
    ``sampler.device`` are then checked for syntax, not for this machine having them.
    Returns a structured ``DictConfig`` (typed, read-only keys set). Raises :class:`TrainConfigError`.
    """
    schema = OmegaConf.structured(TrainConfig)
    if source is None:
        data, where = {}, ""
    elif isinstance(source, (dict, DictConfig)):
        data = _container(source) if isinstance(source, DictConfig) else copy.deepcopy(source)
        where = ""
    else:
        path = _resolve_path(source)
        data, where = _read_yaml(path), f"{path}: "
    try:
        cfg = OmegaConf.merge(schema, OmegaConf.create(data))
    except OmegaConfBaseException as exc:
        raise _format_omegaconf_error(exc, where) from None
    applied: list[tuple[str, str]] = []     # (dotted key, override): what each override set
    for item in overrides or ():
        key, _ = split_override(item, TrainConfigError, example="train.max_steps=40")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as exc:
            raise _format_omegaconf_error(exc, f"override {item!r}: ", key) from None
        applied.append((key, item))
    _validate(cfg, where, applied, check_devices)
    OmegaConf.set_struct(cfg, True)
    return cfg


def config_to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def save_train_config(cfg: DictConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    atomic_write_bytes(path, OmegaConf.to_yaml(cfg, resolve=True).encode())
    return path


# ---------------------------------------------------------------------------------- reference
_RULE_TEXT = {"loss.image_text": "clip | siglip | none | null", "sampler.device": "null or a torch device",
              "train.device": "auto, cpu, cuda or cuda:N"}   # rules that are not _range / _choice


def _doc_sentences(cls: type) -> list[str]:
    import inspect
    import re
    doc = " ".join((inspect.getdoc(cls) or "").split())
    return [x for x in re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.])\s+(?=[A-Z`(])", doc) if x]


def _md(text: str) -> str:
    return text.replace("``", "`").replace("|", "\\|")


def _type_text(tp: Any) -> str:
    import typing
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_type_text(a) for a in rest) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {_type_text(args[0])}"
    if origin is dict:
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _default_text(value: Any) -> str:
    return json.dumps(value).replace("|", "\\|") if not isinstance(value, str) else value


def config_reference_markdown() -> str:
    """docs/CONFIG.md: every training config key with its type, default, allowed values and
    meaning, generated from the schema (the dataclasses above, their docstrings and ``_RULES``).
    A key's meaning is the sentences of its section's docstring that name it (for the sampler's
    ``pinsage`` and ``pairs`` keys, those of ``SamplerSection``). Raises ValueError for a key no
    docstring names, so a new key cannot go undocumented."""
    import typing
    out = ["# Training config reference", "",
           "<!-- Generated from the schema in training/config.py by `pinclip config docs`; do not edit. "
           "tests/training/test_config_command.py checks it is current. -->", "",
           "A training config is a YAML file holding any subset of these keys; the rest keep the defaults "
           "below. `base: FILE` merges the file on top of another one (a path relative to the file, or a "
           "shipped config name such as `demo` when no such file is beside it). On the command line "
           "`key=value` overrides any key (values parsed as YAML): "
           "`pinclip train --config demo --out RUN_DIR data.dataset=DIR train.max_steps=40`. "
           "`pinclip config show demo [key=value ...]` prints the resolved config; "
           "`pinclip config list` lists the shipped ones (training/configs/). "
           "The model architecture is `model.name` (a model config, `pinclip.list_models()`) plus "
           "`model.overrides` (its keys: pinclip/config.py, e.g. `model.overrides.vision.layers=2`).", ""]
    missing: list[str] = []

    def section(cls: type, prefix: str, parents: list[type]) -> None:
        hints = typing.get_type_hints(cls)
        instance = cls()
        rows, subsections = [], []
        for f in dataclasses.fields(cls):
            key, value = f"{prefix}{f.name}", getattr(instance, f.name)
            if dataclasses.is_dataclass(value):
                subsections.append((type(value), f"{key}."))
                continue
            meaning = [x for c in [cls, *parents] for x in _doc_sentences(c)
                       if f"``{f.name}``" in x or f"``{f.name}: " in x][:3]
            if not meaning:
                missing.append(key)
            rule = getattr(_RULES.get(key), "text", "") or _RULE_TEXT.get(key, "")
            rows.append(f"| `{key}` | {_type_text(hints[f.name])} | {_default_text(value)} | {_md(rule)} | "
                        f"{_md(' '.join(dict.fromkeys(meaning)))} |")
        if rows:
            out.extend([f"## `{prefix.rstrip('.')}`", ""])
            intro = _doc_sentences(cls)[:1]
            if intro and not intro[0].startswith("``"):
                out.extend([_md(intro[0]), ""])
            out.extend(["| key | type | default | allowed | meaning |", "|---|---|---|---|---|", *rows, ""])
        for sub, sub_prefix in subsections:
            section(sub, sub_prefix, [cls, *parents])

    for f in dataclasses.fields(TrainConfig):
        section(type(getattr(TrainConfig(), f.name)), f"{f.name}.", [])
    if missing:
        raise ValueError(f"training config keys no docstring describes: {', '.join(missing)}")
    return "\n".join(out).rstrip("\n") + "\n"
