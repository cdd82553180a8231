"""configkit.strict: the strict-config helpers, and that the three config modules share them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import pytest

from configkit.strict import (NonFiniteError, StrictConfigError, WrongTypeError, blamed_override, closest_key,
                              coerce, dataclass_keys, key_in_message, nonfinite_floats, parse_override,
                              read_yaml_mapping, set_dotted, split_override, unknown_key_error)


class MyError(ValueError):
    pass


@dataclass
class Inner:
    num_neighbors: int = 10
    rate: float = 0.5


@dataclass
class Outer:
    name: str = ""
    inner: Inner = field(default_factory=Inner)


def test_unknown_key_suggests_the_closest_key_in_its_section():
    err = unknown_key_error("num_neighbours", ["num_neighbors", "rate"], prefix="inner.", where="f.yaml: ",
                            error=MyError)
    assert isinstance(err, MyError)
    assert str(err) == "f.yaml: unknown key 'inner.num_neighbours' (did you mean 'inner.num_neighbors'?)"
    # Nothing close: the section's keys are listed (the shared prefix alone does not make a match).
    assert str(unknown_key_error("x", ["num_neighbors", "rate"], prefix="inner.")) == (
        "unknown key 'inner.x' (known keys: inner.num_neighbors, inner.rate)")
    assert closest_key("trian", ["data", "train"]) == "train" and closest_key("zzz", ["train"]) is None


def test_dataclass_keys_walk_nested_sections():
    assert dataclass_keys(Outer) == ["name", "inner"]
    assert dataclass_keys(Outer, "inner") == ["num_neighbors", "rate"]
    assert dataclass_keys(Outer, "name") is None and dataclass_keys(Outer, "inner.rate.x") is None


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nonfinite_floats_are_refused_naming_the_key(value):
    with pytest.raises(NonFiniteError, match=r"key 'inner\.rate': .* is not a finite number") as err:
        coerce(value, float, "inner.rate")
    assert err.value.key == "inner.rate" and isinstance(err.value, StrictConfigError)
    with pytest.raises(NonFiniteError, match=r"key 'betas\[1\]'"):
        coerce([0.9, value], list[float], "betas")
    found = nonfinite_floats({"optim": {"lr": value, "betas": [0.9, value]}, "ok": 1.0})
    assert [k for k, _ in found] == ["optim.lr", "optim.betas[1]"]


def test_coerce_checks_types_naming_the_key():
    assert coerce(3, float, "k") == 3.0 and coerce(None, Optional[int], "k") is None
    assert coerce(3.0, int, "k", int_from_float=True) == 3
    with pytest.raises(WrongTypeError, match=r"key 'k': expected int, got float 3\.0"):
        coerce(3.0, int, "k")
    with pytest.raises(WrongTypeError, match=r"key 'k': expected bool, got int 1"):
        coerce(1, bool, "k")
    with pytest.raises(WrongTypeError, match=r"key 'k': expected a list of int"):
        coerce(5, list[int], "k")


def test_yaml_errors_name_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("kind: [unclosed\n")
    with pytest.raises(MyError, match=r"broken\.yaml: invalid YAML"):
        read_yaml_mapping(path, MyError)
    path.write_text("- a\n")
    with pytest.raises(StrictConfigError, match=r"broken\.yaml: expected a mapping at the top level, got list"):
        read_yaml_mapping(path)
    with pytest.raises(StrictConfigError, match=r"missing\.yaml: cannot read"):
        read_yaml_mapping(tmp_path / "missing.yaml")
    path.write_text("")
    assert read_yaml_mapping(path) == {}


def test_overrides_are_split_parsed_set_and_blamed():
    assert split_override(" a.b =x=y") == ("a.b", "x=y")
    assert parse_override("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(MyError, match=r"override 'ab': expected key=value \(e\.g\. a\.b=1\)"):
        split_override("ab", MyError, example="a.b=1")
    with pytest.raises(StrictConfigError, match="empty key"):
        split_override("=1")
    data = {"a": {"x": 1}, "s": 3}
    set_dotted(data, "a.b.c", 2)
    assert data == {"a": {"x": 1, "b": {"c": 2}}, "s": 3}
    with pytest.raises(MyError, match=r"override 's\.t': 's' is not a section"):
        set_dotted(data, "s.t", 1, MyError)
    applied = [("optim", "optim={}"), ("optim.lr", "optim.lr=nan"), ("train.seed", "train.seed=1")]
    assert blamed_override(applied, "optim.lr") == "optim.lr=nan"
    assert blamed_override(applied, "optim.betas[1]") == "optim={}"
    assert blamed_override(applied, "data.x") is None
    assert key_in_message("f: key 'a.b' = 1: bad") == "a.b" and key_in_message("no key here") is None


# ---------------------------------------------------------------------------------- the three modules
def test_model_config_unknown_key_suggests_the_closest_key():
    from pinclip.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match=r"model config 'm': unknown key 'vision\.widht' "
                                          r"\(did you mean 'vision\.width'\?\)"):
        config_from_dict({"vision": {"widht": 32}}, "m")


def test_sampler_config_unknown_key_suggests_the_closest_key():
    from sampling.config import SamplerConfigError, load_sampler_config
    with pytest.raises(SamplerConfigError, match=r"unknown key 'pixie\.num_walk' \(did you mean 'pixie\.num_walks'\?\)"):
        load_sampler_config("pinsage_default", ["pixie.num_walk=3"])


def test_train_config_unknown_key_suggests_the_closest_key(tmp_path):
    from training.config import TrainConfigError, load_train_config
    with pytest.raises(TrainConfigError, match=r"override 'train\.max_stepz=3': unknown key 'train\.max_stepz' "
                                               r"\(did you mean 'train\.max_steps'\?\)"):
        load_train_config("demo", ["train.max_stepz=3"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("sampler:\n  pinsage:\n    num_neighbours: 5\n")
    with pytest.raises(TrainConfigError, match=r"bad\.yaml: unknown key 'sampler\.pinsage\.num_neighbours' "
                                               r"\(did you mean 'sampler\.pinsage\.num_neighbors'\?\)"):
        load_train_config(bad)
    bad.write_text("train: [unclosed\n")
    with pytest.raises(TrainConfigError, match=r"bad\.yaml: invalid YAML"):
        load_train_config(bad)


def test_model_config_nan_names_the_key():
    from pinclip.config import ConfigError, config_from_dict
    with pytest.raises(ConfigError, match=r"model config 'm': key 'fusion\.mlp_ratio' = nan is not a finite number"):
        config_from_dict({"fusion": {"mlp_ratio": float("nan")}}, "m")
