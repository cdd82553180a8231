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

This module loads, validates and resolves; the schema and its value rules are
:mod:`training.config_schema`, the generated reference :mod:`training.config_reference` (their
public names are re-exported here).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from configkit.strict import (blamed_override, dataclass_keys, key_in_message, nonfinite_floats, read_yaml_mapping,
                              split_override, unknown_key_error)
from graph.atomic import atomic_write_bytes
from graph.devices import device_problem
from pinclip.config import ConfigFileMissingError, config_from_dict, merge_overrides
from pinclip.config import config_to_dict as model_config_to_dict
from pinclip.factory import get_model_config
from pinclip.transforms import AugmentConfig
from sampling.config import SamplerConfigError
from sampling.config import config_from_dict as sampler_config_from_dict
from training.config_reference import config_reference_markdown
from training.config_schema import (CONFIG_DIR, DEVICE_KEYS, RULES, DataConfig, EvalConfig, LossSection,
                                    ModelSection, OptimConfig, SamplerSection, TrainConfig, TrainConfigError,
                                    TrainSection, device_syntax_problem)

__all__ = ["TrainConfigError", "DataConfig", "SamplerSection", "ModelSection", "LossSection",
           "OptimConfig", "TrainSection", "EvalConfig", "TrainConfig", "load_train_config",
           "save_train_config", "config_to_dict", "resolve_model_config", "sampler_config", "augment_config",
           "CONFIG_DIR", "list_train_configs", "config_reference_markdown"]


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
    for key, rule in RULES.items():
        value = _get(cfg, key)
        if isinstance(value, (DictConfig,)) or OmegaConf.is_list(value):
            value = OmegaConf.to_container(value)
        problem = rule(value)
        if problem:
            raise TrainConfigError(f"{_blame(where, overrides, key)}key '{key}' = {value!r}: {problem}")
    for key, allow_auto in DEVICE_KEYS.items():
        value = _get(cfg, key)
        if check_devices:
            problem = device_problem(value, allow_auto=allow_auto)
            if problem and problem.startswith(f"{value!r}: "):
                problem = problem[len(f"{value!r}: "):]   # the message shows the value already
        else:
            problem = device_syntax_problem(value, allow_auto)
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


def augment_config(section: Any) -> AugmentConfig:
    """The ``pinclip.transforms.AugmentConfig`` of a training config's ``data.augmentation``
    (same keys; its [min, max] lists become tuples)."""
    return AugmentConfig(**{key: tuple(map(float, v)) if isinstance(v, list) else float(v)
                            for key, v in _container(section).items()})


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
    for key in ("neighbor_fused_weight", "neighbor_image_weight", "neighbor_cross_modal_weight",
                "neighbor_image_image_weight"):
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
