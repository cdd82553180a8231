"""Sampler configs: a dataclass schema, YAML presets researchers edit, strict validation.

    from sampling.config import load_sampler_config, list_sampler_configs
    from sampling.builder import build_sampler
    cfg = load_sampler_config("pinsage_default", ["pinsage.num_neighbors=20"])
    cfg = load_sampler_config("my_sampler.yaml")
    sampler = build_sampler(cfg, graph)

A YAML file holds any subset of the ``SamplerConfig`` keys; the rest keep their defaults.
Presets live in ``sampling/configs/*.yaml`` (``list_sampler_configs()``). Every problem raises
``SamplerConfigError`` naming the file (or the override that caused it) and the dotted key:
unknown keys (with the closest known key suggested), wrong types, out-of-range values, NaN or
infinite floats, device strings this machine cannot use. Only PyYAML is needed (no OmegaConf),
so the configs also load in the DGL side environment. The key, type, YAML and override checks are
the shared strict-config helpers of :mod:`configkit.strict`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import yaml

from configkit.strict import (StrictConfigError, blamed_override, coerce, key_in_message, parse_override,
                              read_yaml_mapping, set_dotted, unknown_key_error)
from graph.errors import ToolkitError

__all__ = ["SamplerConfig", "RandomWalkConfig", "PinSageConfig", "PixieConfig", "FanoutConfig",
           "PairConfig", "LoaderConfig", "SamplerConfigError", "load_sampler_config",
           "list_sampler_configs", "config_from_dict", "config_to_dict", "save_sampler_config",
           "build_sampler", "build_pair_loader", "CONFIG_DIR", "KINDS"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
KINDS = ("random_walk", "pinsage", "pixie", "fanout", "pairs")


class SamplerConfigError(ToolkitError, ValueError):
    """A sampler config is invalid; the message names the file (or override, when any) and the key."""


@dataclass
class RandomWalkConfig:
    """``random_walk``: pin -> board -> pin walks, one per seed."""
    num_hops: int = 4
    restart_prob: float = 0.0
    termination_prob: float = 0.0
    weighted: bool = False


@dataclass
class PinSageConfig:
    """``PinSageSampler``: top-T most visited pins of short walks."""
    num_traversals: int = 3
    termination_prob: float = 0.5
    num_random_walks: int = 200
    num_neighbors: int = 10
    weighted: bool = False


@dataclass
class PixieConfig:
    """``PixieSampler``: restart walks from weighted multi-pin queries, multi-hit booster."""
    num_walks: int = 1000
    num_hops: int = 4
    restart_prob: float = 0.5
    num_neighbors: int = 10
    boost: bool = True
    degree_scaling: bool = True
    weighted: bool = False


@dataclass
class FanoutConfig:
    """``FanoutSampler``: k-hop neighbor sampling, hops alternating pin -> board -> pin.
    ``edge_id_table``: keep a board -> edge-id table (4 bytes per edge, built with the sampler)
    so that board -> pin hops find edge ids with one gather; false: a binary search instead."""
    fanouts: list[int] = field(default_factory=lambda: [10, 5])
    seed_type: str = "pin"
    weighted: bool = False
    replace: bool = False
    edge_id_table: bool = True


@dataclass
class PairConfig:
    """``NeighborPairSampler``: positives from the ``pinsage`` section's walk, negatives, masks."""
    num_positives: int = 4
    positive_weighting: str = "visits"
    num_negatives: int = 0
    num_hard_negatives: int = 0
    hard_rank_range: list[int] = field(default_factory=lambda: [10, 100])
    hard_num_random_walks: int = 400
    hard_num_traversals: int = 4
    hard_termination_prob: float = 0.3
    hard_curriculum: bool = False
    mask_shared_boards: bool = True


@dataclass
class LoaderConfig:
    """``NeighborPairDataset`` / ``NeighborPairLoader``."""
    batch_size: int = 256
    num_workers: int = 0
    shuffle: bool = True
    drop_last: bool = False
    persistent_workers: bool = False


@dataclass
class SamplerConfig:
    """The whole sampler config. ``kind`` picks the sampler ``build_sampler`` makes; the other
    sections are ignored by it (``pairs`` also uses ``pinsage``).

    exclude_splits: edge splits removed from the graph before sampling, when it has splits
    (leakage control; names from ``graph.splits.SPLIT_NAMES``: train, val, test, cold_start).
    device: ``null`` (where the graph is), ``cpu``, ``cuda``, ``cuda:1``...
    """
    name: str = ""
    kind: str = "pinsage"
    seed: int = 0
    device: Optional[str] = None
    exclude_splits: list[str] = field(default_factory=lambda: ["val", "test", "cold_start"])
    random_walk: RandomWalkConfig = field(default_factory=RandomWalkConfig)
    pinsage: PinSageConfig = field(default_factory=PinSageConfig)
    pixie: PixieConfig = field(default_factory=PixieConfig)
    fanout: FanoutConfig = field(default_factory=FanoutConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)


# ---------------------------------------------------------------------------------- rules
def _prob(lo_open: bool = False, hi_open: bool = False):
    def check(v: float) -> str | None:
        lo_ok = v > 0 if lo_open else v >= 0
        hi_ok = v < 1 if hi_open else v <= 1
        if not (lo_ok and hi_ok):
            return f"must be in {'(' if lo_open else '['}0, 1{')' if hi_open else ']'}"
        return None
    return check


def _at_least(n: int):
    return lambda v: None if v >= n else f"must be >= {n}"


def _choice(*options: str):
    return lambda v: None if v in options else f"must be one of {', '.join(map(repr, options))}"


def _fanouts(v: list[int]) -> str | None:
    if not v:
        return "must list at least one hop"
    for i, k in enumerate(v):
        if k < -1 or k == 0:
            return f"entry {i} = {k} must be >= 1 (or -1 for all neighbors)"
    return None


def _rank_range(v: list[int]) -> str | None:
    if len(v) != 2 or not 0 <= v[0] < v[1]:
        return "must be [lo, hi] with 0 <= lo < hi"
    return None


def _splits(v: list[str]) -> str | None:
    for s in v:
        if s not in ("train", "val", "test", "cold_start"):
            return f"unknown split {s!r} (expected train, val, test, cold_start)"
    return None


def _device(v: str | None) -> str | None:
    # A device this machine lacks ("cuda" on a CPU-only torch) fails here, naming the key, not
    # deep inside the first sampling kernel.
    from graph.devices import device_problem
    problem = device_problem(v)
    # The message already shows the value after the key: drop device_problem's own "'cuda': ".
    return problem[len(f"{v!r}: "):] if problem and problem.startswith(f"{v!r}: ") else problem


_RULES = {
    "kind": _choice(*KINDS), "seed": _at_least(0), "device": _device, "exclude_splits": _splits,
    "random_walk.num_hops": _at_least(1), "random_walk.restart_prob": _prob(hi_open=True),
    "random_walk.termination_prob": _prob(hi_open=True),
    "pinsage.num_traversals": _at_least(1), "pinsage.termination_prob": _prob(),
    "pinsage.num_random_walks": _at_least(1), "pinsage.num_neighbors": _at_least(1),
    "pixie.num_walks": _at_least(1), "pixie.num_hops": _at_least(1),
    "pixie.restart_prob": _prob(hi_open=True), "pixie.num_neighbors": _at_least(1),
    "fanout.fanouts": _fanouts, "fanout.seed_type": _choice("pin", "board"),
    "pairs.num_positives": _at_least(1), "pairs.positive_weighting": _choice("visits", "uniform"),
    "pairs.num_negatives": _at_least(0), "pairs.num_hard_negatives": _at_least(0),
    "pairs.hard_rank_range": _rank_range, "pairs.hard_num_random_walks": _at_least(1),
    "pairs.hard_num_traversals": _at_least(1), "pairs.hard_termination_prob": _prob(),
    "loader.batch_size": _at_least(1), "loader.num_workers": _at_least(0),
}


# ---------------------------------------------------------------------------------- building
def _coerce(value: Any, tp: Any, key: str, where: str) -> Any:
    try:
        return coerce(value, tp, key, int_from_float=True)
    except StrictConfigError as exc:
        raise SamplerConfigError(f"{where}{exc}") from None


def _build(cls: type, data: Any, prefix: str, where: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        what = f"key '{prefix[:-1]}'" if prefix else "the top level"
        raise SamplerConfigError(f"{where}{what}: expected a mapping, got {type(data).__name__} {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            raise unknown_key_error(key, known, prefix=prefix, where=where, error=SamplerConfigError)
    kwargs = {}
    for name, f in known.items():
        tp = hints[name]
        full = f"{prefix}{name}"
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, data.get(name), f"{full}.", where)
        elif name in data:
            kwargs[name] = _coerce(data[name], tp, full, where)
    return cls(**kwargs)


def _validate(cfg: SamplerConfig, where: str) -> None:
    for key, rule in _RULES.items():
        obj: Any = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        problem = rule(obj)
        if problem:
            raise SamplerConfigError(f"{where}key '{key}' = {obj!r}: {problem}")
    if cfg.kind == "pairs" and cfg.pairs.num_positives > cfg.pinsage.num_neighbors:
        raise SamplerConfigError(f"{where}key 'pairs.num_positives' = {cfg.pairs.num_positives}: must be <= "
                                 f"pinsage.num_neighbors = {cfg.pinsage.num_neighbors} (positives are drawn "
                                 "from the top-T neighborhood)")


def config_from_dict(data: dict[str, Any], source: str | None = None) -> SamplerConfig:
    """Build and validate a ``SamplerConfig`` from nested dicts (``source`` names it in errors)."""
    where = f"{source}: " if source else ""
    cfg = _build(SamplerConfig, data, "", where)
    _validate(cfg, where)
    return cfg


def config_to_dict(cfg: SamplerConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def list_sampler_configs() -> list[str]:
    """Names of the shipped presets (``sampling/configs/*.yaml``)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def load_sampler_config(source: str | Path | dict[str, Any] | None = None,
                        overrides: Sequence[str] | dict[str, Any] | None = None) -> SamplerConfig:
    """Load a config: a preset name, a YAML path, a dict, or None (the defaults).

    overrides: ``["pinsage.num_neighbors=20", ...]`` (values parsed as YAML) or a
    ``{dotted_key: value}`` dict, applied on top. Raises ``SamplerConfigError``.
    """
    name = None
    if source is None:
        data: Any = {}
    elif isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if not path.suffix and not path.exists():
            path = CONFIG_DIR / f"{source}.yaml"
            if not path.exists():
                raise SamplerConfigError(f"unknown sampler config {str(source)!r}: not a file and not a preset "
                                         f"({', '.join(list_sampler_configs())})")
        name = str(path)
        data = read_yaml_mapping(path, SamplerConfigError)
    data = _deepcopy(data)
    applied: list[tuple[str, str]] = []     # (dotted key, override as the user wrote it)
    if overrides:
        items = overrides.items() if isinstance(overrides, dict) else []
        if not isinstance(overrides, dict):
            parsed = []
            for o in overrides:
                k, v = parse_override(o, SamplerConfigError)
                parsed.append((k, v))
                applied.append((k, o))
            items = parsed
        else:
            applied = [(str(k), f"{k}={v!r}") for k, v in overrides.items()]
        for k, v in items:
            set_dotted(data, k, v, SamplerConfigError, f"{name}: " if name else "")
    try:
        cfg = config_from_dict(data, name)
    except SamplerConfigError as exc:
        raise _blame_override(exc, name, applied) from None
    if not cfg.name and name is not None:
        cfg.name = Path(name).stem
    return cfg


def _blame_override(exc: SamplerConfigError, name: str | None, applied: list[tuple[str, str]]) -> SamplerConfigError:
    """``exc`` naming the override that set its key (the last one, or one for a section above or
    a key below it) instead of the file; unchanged when the file's own value is at fault."""
    msg = str(exc)
    key = key_in_message(msg)
    item = blamed_override(applied, key) if key else None
    if item is None:
        return exc
    where = f"{name}: " if name else ""
    body = msg[len(where):] if where and msg.startswith(where) else msg
    return SamplerConfigError(f"override {item!r}: {body}")


def _deepcopy(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _deepcopy(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_deepcopy(v) for v in x]
    return x


def save_sampler_config(cfg: SamplerConfig, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    return path
