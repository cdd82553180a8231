"""Model config registry and factories, in the style of open_clip's ``factory.py``.

Architectures are JSON files in ``pinclip/model_configs/`` (the file stem is the model name).
``add_model_config`` registers more (a file, a folder of files, or a dict); every config is parsed
and validated when registered, so a typo fails early with the config name and the key.

    >>> from pinclip.factory import list_models, create_model, get_tokenizer, get_image_transform
    >>> model = create_model("pinclip-tiny-demo", fusion={"layers": 2})
"""
from __future__ import annotations

import copy
import json
import logging
from pathlib import Path

import torch

from .config import ConfigError, ConfigFileMissingError, PinCLIPConfig, config_from_dict, config_to_dict, merge_overrides
from .model import PinCLIP
from .tokenizer import HFTokenizer

__all__ = ["list_models", "add_model_config", "get_model_config", "create_model",
           "create_model_and_transforms", "get_tokenizer", "get_image_transform", "get_vlm_tokenizer"]

log = logging.getLogger(__name__)

_MODEL_CONFIG_PATHS = [Path(__file__).parent / "model_configs"]
_MODEL_CONFIGS: dict[str, dict] = {}  # name -> validated raw dict (without "name")
_SCANNED = False


def _register(name: str, data: dict, source: str) -> None:
    data = dict(data)
    data.pop("name", None)
    try:
        config_from_dict(data, name)
    except ConfigError as e:
        raise ConfigError(f"{e} [in {source}]") from None
    _MODEL_CONFIGS[name] = data


def _load_file(path: Path) -> str:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"model config file {path}: invalid JSON at line {e.lineno}: {e.msg}") from None
    _register(path.stem, data, str(path))
    return path.stem


def _rescan() -> None:
    global _SCANNED
    for folder in _MODEL_CONFIG_PATHS:
        for path in sorted(folder.glob("*.json")):
            _load_file(path)
    _SCANNED = True


def _ensure_scanned() -> None:
    if not _SCANNED:
        _rescan()


def list_models() -> list[str]:
    """Names of all registered model configs, sorted."""
    _ensure_scanned()
    return sorted(_MODEL_CONFIGS)


def add_model_config(path_or_dict: str | Path | dict, name: str | None = None) -> list[str]:
    """Register model configs: a JSON file (name = file stem), a folder of JSON files, or a dict
    (name from ``name`` or the dict's ``"name"`` key). Later registrations replace earlier ones of
    the same name. Returns the names registered."""
    _ensure_scanned()
    if isinstance(path_or_dict, dict):
        name = name or path_or_dict.get("name")
        if not name:
            raise ConfigError("add_model_config(dict): give name=... or a 'name' key")
        _register(name, path_or_dict, "<dict>")
        return [name]
    path = Path(path_or_dict)
    if path.is_file():
        return [_load_file(path)]
    if path.is_dir():
        _MODEL_CONFIG_PATHS.append(path)
        return [_load_file(p) for p in sorted(path.glob("*.json"))]
    raise ConfigFileMissingError(f"model config path {path} does not exist")


def get_model_config(name: str) -> PinCLIPConfig:
    """The parsed config of a registered model (a fresh copy, safe to modify)."""
    _ensure_scanned()
    if name not in _MODEL_CONFIGS:
        raise KeyError(f"unknown model config {name!r}; available: {', '.join(sorted(_MODEL_CONFIGS))}")
    return config_from_dict(copy.deepcopy(_MODEL_CONFIGS[name]), name)


def _resolve_config(name_or_config, overrides: dict) -> PinCLIPConfig:
    if isinstance(name_or_config, PinCLIPConfig):
        base, name = config_to_dict(name_or_config), name_or_config.name
    elif isinstance(name_or_config, dict):
        base = copy.deepcopy(name_or_config)
        name = base.get("name", "unnamed")
    elif isinstance(name_or_config, (str, Path)) and str(name_or_config).endswith(".json"):
        path = Path(name_or_config)
        base, name = json.loads(path.read_text()), path.stem
    else:
        _ensure_scanned()
        name = str(name_or_config)
        if name not in _MODEL_CONFIGS:
            raise KeyError(f"unknown model config {name!r}; available: {', '.join(sorted(_MODEL_CONFIGS))}")
        base = copy.deepcopy(_MODEL_CONFIGS[name])
    base.pop("name", None)
    return config_from_dict(merge_overrides(base, overrides), name)


def create_model(name_or_config: str | Path | dict | PinCLIPConfig, device: str | torch.device | None = None,
                 *, pretrained_weights: bool = True, **overrides) -> PinCLIP:
    """Build a :class:`PinCLIP` from a registered name, a JSON path, a dict or a config.

    ``overrides`` deep-merge into the config: ``create_model(name, embed_dim=64,
    vision={"layers": 2}, **{"fusion.region_grid": 0})``; unknown keys raise :class:`ConfigError`
    naming the key and the config. Hugging Face towers load from their ``pretrained`` paths;
    with ``pretrained_weights=False`` they are built from the ``config.json`` there, no weights read.
    """
    cfg = _resolve_config(name_or_config, overrides)
    model = PinCLIP(cfg, pretrained_weights=pretrained_weights)
    if device is not None:
        model = model.to(device)
    return model


def get_tokenizer(model_or_config: PinCLIP | PinCLIPConfig | str, **overrides) -> HFTokenizer:
    """The tokenizer that matches a model's text tower (built-in MiniLM vocabulary for scratch)."""
    if isinstance(model_or_config, PinCLIP):
        cfg = model_or_config.config
    elif isinstance(model_or_config, PinCLIPConfig) and not overrides:
        cfg = model_or_config
    else:
        cfg = _resolve_config(model_or_config, overrides)
    t = cfg.text
    source = t.tokenizer or (t.pretrained if t.type == "hf" else "builtin:all-MiniLM-L6-v2")
    tokenizer = HFTokenizer(source, t.context_length)
    if t.type == "scratch" and tokenizer.vocab_size > t.vocab_size:
        raise ConfigError(f"model config '{cfg.name}': key 'text.vocab_size' ({t.vocab_size}) is smaller "
                          f"than the tokenizer's vocabulary ({tokenizer.vocab_size})")
    return tokenizer


def get_image_transform(model: PinCLIP, train: bool = False, **kwargs):
    """The per-image transform (PIL/path -> [3, S, S] float32) for a model's image tower: the
    checkpoint's image processor for CLIP/SigLIP towers (``vision.use_hf_processor``), else the
    Pillow + torch :class:`~pinclip.transforms.ImageTransform` (for Qwen2-VL with the mean/std of
    its processor config when the checkpoint has one)."""
    from .transforms import HFImageTransform, ImageTransform, image_normalization
    v = model.config.vision
    size = model.visual.image_size
    path = getattr(model.visual, "pretrained_path", None)
    if path is not None and (Path(path) / "preprocessor_config.json").is_file():
        if v.use_hf_processor and v.type in ("hf_clip", "hf_siglip"):
            return HFImageTransform.from_pretrained(path, size, train, **kwargs)
    elif path is not None:
        log.info("no preprocessor_config.json in %s: using vision.image_mean/std", path)
    mean, std = image_normalization(v, path)
    return ImageTransform(size, mean, std, train, **kwargs)


def get_vlm_tokenizer(model: PinCLIP):
    """The joint VLM encoder's prompt tokenizer (:class:`pinclip.vlm.VLMPromptTokenizer`: captions
    -> ``vlm_input_ids`` / ``vlm_attention_mask``), or None when the fusion does not read a VLM."""
    if getattr(model, "vlm", None) is None or not model.fusion.use_vlm:
        return None
    return model.vlm.tokenizer


def create_model_and_transforms(name_or_config, device=None, **overrides):
    """(model, train transform, eval transform, tokenizer), as open_clip's function of that name
    (plus the tokenizer)."""
    model = create_model(name_or_config, device, **overrides)
    return (model, get_image_transform(model, train=True), get_image_transform(model, train=False),
            get_tokenizer(model))
