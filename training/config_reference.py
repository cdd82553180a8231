"""docs/CONFIG.md, generated from the training config schema (:mod:`training.config_schema`):
every key with its type, default, allowed values and meaning (``pinclip config docs``)."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from training.config_schema import RULES, TrainConfig

__all__ = ["config_reference_markdown"]

RULE_TEXT = {"loss.image_text": "clip | siglip | none | null", "sampler.device": "null or a torch device",
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
    meaning, generated from the schema (the dataclasses of :mod:`training.config_schema`, their docstrings and ``RULES``).
    A key's meaning is the sentences of its section's docstring that name it (for the sampler's
    ``pinsage`` and ``pairs`` keys, those of ``SamplerSection``). Raises ValueError for a key no
    docstring names, so a new key cannot go undocumented."""
    import typing
    out = ["# Training config reference", "",
           "<!-- Generated from the schema in training/config_schema.py by `pinclip config docs`; do not edit. "
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
            rule = getattr(RULES.get(key), "text", "") or RULE_TEXT.get(key, "")
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
