"""Sampler configs: presets, strict validation with the key named, overrides, factories."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from graph import make_splits
from sampling import (FanoutSampler, NeighborPairSampler, PinSageSampler, PixieSampler, SamplerConfig,
                      SamplerConfigError, build_sampler, list_sampler_configs, load_sampler_config)
from sampling.config import config_to_dict, save_sampler_config


def test_presets_load_and_build(medium_graph):
    names = list_sampler_configs()
    assert {"pinsage_default", "pixie_restart", "fanout_2hop", "neighbor_pairs", "random_walk_default"} <= set(names)
    expect = {"pinsage": PinSageSampler, "pixie": PixieSampler, "fanout": FanoutSampler, "pairs": NeighborPairSampler}
    for name in names:
        cfg = load_sampler_config(name)
        assert cfg.name == name
        s = build_sampler(cfg, medium_graph)
        if cfg.kind == "random_walk":
            assert s(torch.arange(4)).shape == (4, 2 * cfg.random_walk.num_hops + 1)
        else:
            assert isinstance(s, expect[cfg.kind])


def test_defaults_and_round_trip(tmp_path):
    cfg = load_sampler_config()
    assert cfg == SamplerConfig()
    cfg = load_sampler_config("neighbor_pairs", ["pairs.num_positives=2", "pinsage.termination_prob=0.25",
                                                 "device=cpu"])
    assert cfg.pairs.num_positives == 2 and cfg.pinsage.termination_prob == 0.25 and cfg.device == "cpu"
    path = save_sampler_config(cfg, tmp_path / "mine.yaml")
    again = load_sampler_config(path)
    assert config_to_dict(again) == config_to_dict(cfg)
    assert load_sampler_config({"pinsage": {"num_neighbors": 3}}, {"seed": 4}).pinsage.num_neighbors == 3


@pytest.mark.parametrize("override, message", [
    ("pinsage.num_walks=3", r"unknown key 'pinsage.num_walks' \(did you mean 'pinsage.num_random_walks'\?\)"),
    ("colour=blue", r"unknown key 'colour'"),
    ("pinsage.termination_prob=1.5", r"key 'pinsage.termination_prob' = 1.5: must be in \[0, 1\]"),
    ("random_walk.restart_prob=1.0", r"key 'random_walk.restart_prob' = 1.0: must be in \[0, 1\)"),
    ("pinsage.num_neighbors=0", r"key 'pinsage.num_neighbors' = 0: must be >= 1"),
    ("pinsage.num_neighbors=ten", r"key 'pinsage.num_neighbors': expected int, got str 'ten'"),
    ("pinsage.num_neighbors=2.5", r"key 'pinsage.num_neighbors': expected int"),
    ("pinsage.weighted=1", r"key 'pinsage.weighted': expected bool"),
    ("fanout.fanouts=[10, 0]", r"key 'fanout.fanouts' = \[10, 0\]: entry 1 = 0"),
    ("fanout.fanouts=10", r"key 'fanout.fanouts': expected a list of int"),
    ("fanout.seed_type=user", r"key 'fanout.seed_type' = 'user': must be one of 'pin', 'board'"),
    ("pairs.num_positives=20", r"key 'pairs.num_positives' = 20: must be <= pinsage.num_neighbors"),
    ("pairs.hard_rank_range=[50, 10]", r"key 'pairs.hard_rank_range'"),
    ("kind=magic", r"key 'kind' = 'magic': must be one of"),
    ("exclude_splits=[val, holdout]", r"unknown split 'holdout'"),
    ("device=quantum", r"key 'device' = 'quantum'"),
    ("pinsage=3", r"key 'pinsage': expected a mapping"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(SamplerConfigError, match=message):
        load_sampler_config("neighbor_pairs", [override])


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: pinsage\npinsage:\n  num_neighbours: 5\n")
    with pytest.raises(SamplerConfigError, match=r"bad\.yaml: unknown key 'pinsage.num_neighbours' "
                                                 r"\(did you mean 'pinsage.num_neighbors'\?\)"):
        load_sampler_config(bad)
    bad.write_text("kind: [unclosed\n")
    with pytest.raises(SamplerConfigError, match=r"bad\.yaml: invalid YAML"):
        load_sampler_config(bad)
    bad.write_text("- a\n- b\n")
    with pytest.raises(SamplerConfigError, match=r"bad\.yaml: expected a mapping"):
        load_sampler_config(bad)
    with pytest.raises(SamplerConfigError, match="unknown sampler config 'nope'"):
        load_sampler_config("nope")
    with pytest.raises(SamplerConfigError, match="expected key=value"):
        load_sampler_config("pinsage_default", ["pinsage.num_neighbors"])
    assert issubclass(SamplerConfigError, ValueError)


def test_exclude_splits_removes_held_out_edges(medium_graph):
    g = medium_graph
    g.splits = make_splits(g, val_fraction=0.2, test_fraction=0.1, cold_start_fraction=0.1, seed=0)
    try:
        s = build_sampler(load_sampler_config("pinsage_default"), g)
        kept = np.asarray(g.splits.edge_split) == 0
        assert s.graph.num_edges == int(kept.sum())
        keep_all = build_sampler(load_sampler_config("pinsage_default", ["exclude_splits=[]"]), g)
        assert keep_all.graph.num_edges == g.num_edges
        cold = torch.from_numpy(np.asarray(g.splits.cold_start_pins))
        assert (s.graph.pins.degrees(cold) == 0).all()                 # cold-start pins lose every edge
        pairs = build_sampler(load_sampler_config("pinsage_default", ["kind=pairs", "pairs.num_negatives=64"]), g)
        visible = set(torch.nonzero(pairs.graph.pins.degrees(torch.arange(g.num_pins)) > 0).squeeze(1).tolist())
        assert set(pairs.negative_pool.tolist()) == visible and not visible & set(cold.tolist())
        warm_seeds = torch.tensor(sorted(visible))[:32]
        negatives = pairs.sample(warm_seeds).negatives
        assert not set(negatives.flatten().tolist()) & set(cold.tolist())   # cold-start pins never negatives
        everyone = build_sampler(load_sampler_config("pinsage_default", ["kind=pairs", "exclude_splits=[]"]), g)
        assert everyone.negative_pool is None
    finally:
        g.splits = None


@pytest.mark.parametrize("override, message", [
    ("pinsage.termination_prob=.nan", r"key 'pinsage.termination_prob': nan is not a finite number"),
    ("pixie.restart_prob=.inf", r"key 'pixie.restart_prob': inf is not a finite number"),
    ("device=cuda:99", r"key 'device' = 'cuda:99'"),
    ("device=gpu0", r"key 'device' = 'gpu0': 'gpu0' is not a torch device"),
])
def test_nonfinite_floats_and_unusable_devices_name_the_key_and_the_override(override, message):
    with pytest.raises(SamplerConfigError, match=message) as err:
        load_sampler_config("neighbor_pairs", [override])
    # The override is at fault, not the preset file.
    assert str(err.value).startswith(f"override {override!r}: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_on_a_cpu_only_torch_is_a_config_error():
    with pytest.raises(SamplerConfigError, match=r"key 'device' = 'cuda': CUDA is not available"):
        load_sampler_config("neighbor_pairs", ["device=cuda"])
    with pytest.raises(SamplerConfigError, match=r"key 'device' = 'cuda': CUDA is not available"):
        load_sampler_config({"device": "cuda"})


def test_sampler_config_error_is_a_toolkit_error():
    from graph.errors import ToolkitError
    assert issubclass(SamplerConfigError, ToolkitError) and issubclass(SamplerConfigError, ValueError)
