"""Training configs: shipped files, base chains, overrides, errors that name the key."""
from __future__ import annotations

import pytest

from training.config import (TrainConfigError, list_train_configs, load_train_config, resolve_model_config,
                             save_train_config)


def test_shipped_configs_load():
    assert {"demo", "clip_only", "gpu_hf_clip"} <= set(list_train_configs())
    demo = load_train_config("demo")
    assert demo.model.name == "pinclip-tiny-demo" and demo.loss.neighbor_weight == 1.0
    assert demo.model.precision == "auto"           # fp32 on CPU, bf16 on CUDA
    clip = load_train_config("clip_only")             # base: demo.yaml
    assert clip.train.max_steps == demo.train.max_steps and clip.loss.neighbor_weight == 0.0
    loss = resolve_model_config(clip).loss
    assert loss.neighbor_fused_weight == loss.neighbor_image_weight == loss.neighbor_cross_modal_weight == 0.0
    assert resolve_model_config(demo).loss.neighbor_fused_weight > 0
    gpu = load_train_config("gpu_hf_clip")
    assert resolve_model_config(gpu).vision.type == "hf_clip"


def test_overrides_are_typed_and_saved(tmp_path):
    cfg = load_train_config("demo", ["train.max_steps=7", "optim.lr=0.01", "data.dataset=/x",
                                     "model.overrides.vision.layers=2", "model.overrides.fusion.patch_layers=[1,2]",
                                     "loss.neighbor_image_weight=0.25", "sampler.pairs.num_negatives=3"])
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 0.01 and cfg.sampler.pairs.num_negatives == 3
    m = resolve_model_config(cfg)
    assert m.vision.layers == 2 and m.loss.neighbor_image_weight == 0.25
    save_train_config(cfg, tmp_path / "config.yaml")
    again = load_train_config(tmp_path / "config.yaml")
    assert again == cfg


@pytest.mark.parametrize("override, message", [
    ("train.max_stepz=3", "unknown key 'train.max_stepz'"),
    ("trian.max_steps=3", "unknown key 'trian'"),
    ("train.max_steps=ten", "key 'train.max_steps'"),
    ("train.batch_size=0", "key 'train.batch_size' = 0: must be >= 1"),
    ("optim.schedule=linear", "key 'optim.schedule'"),
    ("model.precision=fp16", "key 'model.precision'"),
    ("data.text_cache=maybe", "key 'data.text_cache'"),
    ("sampler.pairs.num_positives=50", "key 'sampler.pairs.num_positives'"),
    ("sampler.pinsage.termination_prob=2", "key 'sampler.pinsage.termination_prob'"),
    ("model.overrides.vision.widht=3", "unknown key 'vision.widht'"),
    ("model.name=no-such-model", "unknown model config 'no-such-model'"),
    ("train.device=gpu", "key 'train.device'"),
    ("max_steps", "expected key=value"),
])
def test_errors_name_the_key(override, message):
    with pytest.raises(TrainConfigError, match=message.replace("[", r"\[")):
        load_train_config("demo", [override])


def test_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: 3\n  bogus: 1\n")
    with pytest.raises(TrainConfigError, match=r"bad.yaml: unknown key 'train.bogus'"):
        load_train_config(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("base: loop.yaml\n")
    with pytest.raises(TrainConfigError, match="loops"):
        load_train_config(loop)
    with pytest.raises(TrainConfigError, match="no such file"):
        load_train_config("no_such_config")
