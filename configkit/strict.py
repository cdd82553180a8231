"""Strict config parsing: the pieces every config module of the toolkit needs.

Why this package exists: the toolkit has three strict config parsers (``pinclip.config`` for model
JSON, ``sampling.config`` for sampler YAML, ``training.config`` for training YAML) in three layers
that may not import each other (pinclip imports none of graph/sampling/training; sampling imports
only graph). The shared rules (unknown keys with a closest-key suggestion, type and NaN/inf checks
naming the dotted key, YAML reading that names the file, ``key=value`` overrides and finding the
override to blame) live here, in a package that imports none of them, so all three behave alike.

Each config module keeps its own exception type: helpers that build a whole message take
``error`` (the class to raise, called with the message) and ``where`` (the message prefix, e.g.
the file name); the per-value checks (:func:`coerce`) raise :class:`WrongTypeError` or
:class:`NonFiniteError`, which carry ``key``, ``value`` and ``detail`` for the module to re-word.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

__all__ = ["StrictConfigError", "WrongTypeError", "NonFiniteError", "closest_key", "unknown_key_error",
           "dataclass_keys", "coerce", "nonfinite_floats", "read_yaml_mapping", "split_override",
           "parse_override", "set_dotted", "blamed_override", "key_in_message"]

ErrorFactory = Callable[[str], Exception]


class StrictConfigError(ValueError):
    """A config problem found by a configkit helper (the default ``error`` of the helpers)."""


class WrongTypeError(StrictConfigError):
    """``value`` at dotted ``key`` has the wrong type. ``str()``: ``key 'K': expected T, got ...``."""

    def __init__(self, key: str, value: Any, detail: str):
        super().__init__(f"key '{key}': {detail}")
        self.key, self.value, self.detail = key, value, detail


class NonFiniteError(StrictConfigError):
    """``value`` at dotted ``key`` is NaN or infinite. ``str()``: ``key 'K': nan is not a finite number``."""

    def __init__(self, key: str, value: Any):
        detail = f"{value!r} is not a finite number"
        super().__init__(f"key '{key}': {detail}")
        self.key, self.value, self.detail = key, value, detail


# ---------------------------------------------------------------------------------- keys
def closest_key(key: str, choices: Iterable[str]) -> str | None:
    """The entry of ``choices`` closest to ``key`` (difflib), or None when none is close."""
    close = difflib.get_close_matches(key, list(choices), n=1)
    return close[0] if close else None


def unknown_key_error(key: str, known: Iterable[str], *, prefix: str = "", where: str = "",
                      error: ErrorFactory = StrictConfigError) -> Exception:
    """The error for unknown key ``prefix + key`` (``prefix``: its section, ``"pinsage."``) among the
    ``known`` keys of that section: ``{where}unknown key 'P.K' (did you mean 'P.X'?)``, or the
    known keys listed when none is close. Returned, not raised, so the caller's ``raise`` shows.
    Names are compared within the section (a shared ``prefix`` would make every key look close)."""
    full = f"{prefix}{key}"
    known = list(known)
    close = closest_key(key, known)
    choices = [f"{prefix}{k}" for k in known]
    hint = f" (did you mean '{prefix}{close}'?)" if close else f" (known keys: {', '.join(choices)})"
    return error(f"{where}unknown key '{full}'{hint}")


def dataclass_keys(cls: type, section: str = "") -> list[str] | None:
    """The field names of the dataclass at dotted ``section`` of the dataclass schema ``cls``
    (``""``: ``cls`` itself), or None when ``section`` is not a nested dataclass of it."""
    for part in section.split(".") if section else ():
        if not dataclasses.is_dataclass(cls):
            return None
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        cls = hints[part]
    if not dataclasses.is_dataclass(cls):
        return None
    return [f.name for f in dataclasses.fields(cls)]


_QUOTED_KEY = re.compile(r"key '([^']+)'")


def key_in_message(message: str) -> str | None:
    """The first ``key '...'`` a config error message names, or None."""
    found = _QUOTED_KEY.search(message)
    return found.group(1) if found else None


# ---------------------------------------------------------------------------------- values
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str, *, int_from_float: bool = False) -> Any:
    """``value`` checked against the annotation ``tp`` (bool, int, float, str, ``list[T]``,
    ``Optional[T]`` / ``T | None``; anything else passes unchecked). Floats must be finite (NaN
    passes every range check, so it is refused here). ``int_from_float``: accept ``3.0`` for an int.
    Raises :class:`WrongTypeError` or :class:`NonFiniteError` naming the dotted ``key`` (list
    items as ``key[i]``)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key, int_from_float=int_from_float)
            except StrictConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise WrongTypeError(key, value, f"expected a list of {_type_name(item_tp)}, "
                                             f"got {type(value).__name__} {value!r}")
        return [coerce(v, item_tp, f"{key}[{i}]", int_from_float=int_from_float) for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if int_from_float and isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(float(value)):
                raise NonFiniteError(key, value)
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        return value
    raise WrongTypeError(key, value, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def nonfinite_floats(node: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every NaN or infinite float in a plain nested dict / list."""
    out: list[tuple[str, float]] = []
    if isinstance(node, dict):
        for k, v in node.items():
            out += nonfinite_floats(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            out += nonfinite_floats(v, f"{prefix}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        out.append((prefix, node))
    return out


# ---------------------------------------------------------------------------------- files
def read_yaml_mapping(path: str | Path, error: ErrorFactory = StrictConfigError) -> dict:
    """The YAML file ``path`` as a dict ({} when empty). An unreadable file, invalid YAML or a
    top level that is not a mapping raises ``error`` naming the file."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"{path}: invalid YAML: {exc}") from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# ---------------------------------------------------------------------------------- overrides
def split_override(item: str, error: ErrorFactory = StrictConfigError, example: str | None = None) -> tuple[str, str]:
    """``"a.b=value"`` -> ``("a.b", "value")`` (key stripped, value as written). A missing ``=`` or
    an empty key raises ``error`` naming the override (``example`` is shown as a hint)."""
    if "=" not in item:
        hint = f" (e.g. {example})" if example else ""
        raise error(f"override {item!r}: expected key=value{hint}")
    key, value = item.split("=", 1)
    key = key.strip()
    if not key:
        raise error(f"override {item!r}: empty key")
    return key, value


def parse_override(item: str, error: ErrorFactory = StrictConfigError, example: str | None = None) -> tuple[str, Any]:
    """``"a.b=[1, 2]"`` -> ``("a.b", [1, 2])``: :func:`split_override`, the value parsed as YAML."""
    key, text = split_override(item, error, example)
    try:
        return key, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise error(f"override {item!r}: invalid value: {exc}") from None


def set_dotted(data: dict[str, Any], dotted: str, value: Any, error: ErrorFactory = StrictConfigError,
               where: str = "") -> None:
    """``data[a][b][c] = value`` for ``dotted`` ``"a.b.c"``, creating missing sections. A part
    that exists but is not a mapping raises ``error``."""
    parts = dotted.split(".")
    node = data
    for p in parts[:-1]:
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise error(f"{where}override '{dotted}': '{p}' is not a section")
        node = nxt
    node[parts[-1]] = value


def blamed_override(applied: Sequence[tuple[str, str]], *keys: str) -> str | None:
    """The override to blame for a problem with ``keys`` (most specific first): the last of
    ``applied`` ((dotted key, override as written), in order) that set one of them, a section
    holding it or a key inside it; None when no override touched them (the file is at fault).
    List items (``optim.betas[1]``) belong to their list key."""
    for key in keys:
        key = key.split("[", 1)[0]
        for okey, item in reversed(applied):
            if okey == key or key.startswith(okey + ".") or okey.startswith(key + "."):
                return item
    return None
