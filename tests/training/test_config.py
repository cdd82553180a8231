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


@pytest.mark.parametrize("key", ["optim.lr", "optim.min_lr", "optim.grad_clip", "optim.eps", "loss.neighbor_weight",
                                 "data.val_fraction"])
@pytest.mark.parametrize("value", ["nan", ".nan", "inf", ".inf", "-.inf"])
def test_nonfinite_floats_are_refused_naming_the_key_and_the_override(key, value):
    """NaN passes every range check (it compares false), and inf passes the lower bounds: both
    used to reach training (exit 0, NaN weights). Every float key refuses them."""
    with pytest.raises(TrainConfigError) as err:
        load_train_config("demo", [f"{key}={value}"])
    msg = str(err.value)
    assert msg.startswith(f"override '{key}={value}': key '{key}': ") and "is not a finite number" in msg
    assert "demo.yaml" not in msg            # the override is at fault, not the file


def test_nonfinite_floats_anywhere_in_the_config_are_refused(tmp_path):
    # In a file (named), in a list, in the free-form model.overrides.
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: .nan\n")
    with pytest.raises(TrainConfigError, match=r"bad\.yaml: key 'optim\.lr': nan is not a finite number"):
        load_train_config(bad)
    with pytest.raises(TrainConfigError, match=r"key 'optim\.betas\[1\]': nan is not a finite number"):
        load_train_config("demo", ["optim.betas=[0.9,.nan]"])
    with pytest.raises(TrainConfigError, match=r"key 'model\.overrides\.init_logit_scale': inf is not a finite"):
        load_train_config("demo", ["model.overrides.init_logit_scale=.inf"])
    with pytest.raises(TrainConfigError, match=r"key 'sampler\.pinsage\.termination_prob': nan is not a finite"):
        load_train_config({"sampler": {"pinsage": {"termination_prob": float("nan")}}})


def test_errors_caused_by_an_override_name_the_override(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  max_steps: 3\n")
    cases = {
        "train.batch_size=0": "key 'train.batch_size' = 0",
        "optim.min_lr=0.5": "key 'optim.min_lr' = 0.5 must be <= optim.lr",
        "sampler.pairs.num_positives=50": "key 'sampler.pairs.num_positives'",
        "model.overrides.vision.widht=3": "unknown key 'vision.widht'",
        "model.name=no-such-model": "unknown model config 'no-such-model'",
        "data.val_fraction=0.96": "'data.val_fraction' + 'data.test_fraction' must be < 1",
    }
    for item, message in cases.items():
        with pytest.raises(TrainConfigError) as err:
            load_train_config(cfg, ["train.seed=3", item, "train.log_every=2"])
        assert str(err.value).startswith(f"override {item!r}: ") and message in str(err.value), str(err.value)
    # The file's own bad value still names the file, even with overrides given.
    cfg.write_text("train:\n  batch_size: 0\n")
    with pytest.raises(TrainConfigError, match=r"cfg\.yaml: key 'train\.batch_size' = 0"):
        load_train_config(cfg, ["train.seed=3"])


def test_device_keys_are_checked_against_this_machine():
    import torch
    with pytest.raises(TrainConfigError, match=r"override 'train\.device=gpu0': key 'train\.device' = 'gpu0': "
                                               r"'gpu0' is not a torch device"):
        load_train_config("demo", ["train.device=gpu0"])
    with pytest.raises(TrainConfigError, match=r"key 'sampler\.device' = 'auto'"):
        load_train_config("demo", ["sampler.device=auto"])    # auto is a train.device value only
    assert load_train_config("demo", ["train.device=auto", "sampler.device=cpu"]).sampler.device == "cpu"
    with pytest.raises(TrainConfigError, match=r"key 'sampler\.device' = 'cuda:99'"):
        load_train_config("demo", ["sampler.device=cuda:99"])
    if not torch.cuda.is_available():
        with pytest.raises(TrainConfigError, match=r"key 'sampler\.device' = 'cuda': CUDA is not available"):
            load_train_config("demo", ["sampler.device=cuda"])
        with pytest.raises(TrainConfigError, match=r"key 'train\.device' = 'cuda': CUDA is not available"):
            load_train_config("demo", ["train.device=cuda"])
        # A saved run read for its data and model only (embed, evaluate elsewhere): syntax only.
        assert load_train_config("demo", ["train.device=cuda"], check_devices=False).train.device == "cuda"
    with pytest.raises(TrainConfigError, match="'gpu0' is not a torch device"):
        load_train_config("demo", ["train.device=gpu0"], check_devices=False)


def test_config_errors_are_toolkit_errors():
    from graph.errors import ToolkitError
    assert issubclass(TrainConfigError, ToolkitError) and issubclass(TrainConfigError, ValueError)


@pytest.mark.parametrize("value", ["0", "-0.5", "fast"])
def test_lr_scale_multipliers_are_checked_when_the_config_loads(value):
    """Not only when the optimizer is built, minutes into a run: the override is named."""
    with pytest.raises(TrainConfigError) as err:
        load_train_config("demo", [f"optim.lr_scale.text_proj={value}"])
    msg = str(err.value)
    assert msg.startswith(f"override 'optim.lr_scale.text_proj={value}': key 'optim.lr_scale")
    assert "text_proj" in msg and ("> 0" in msg if value != "fast" else "Float" in msg)
    assert load_train_config("demo", ["optim.lr_scale.text_proj=0.1"]).optim.lr_scale == {"text_proj": 0.1}


def test_augmentation_strengths_default_to_the_library_defaults_and_reach_the_transform():
    from pinclip.transforms import AugmentConfig
    from training.config import augment_config
    assert augment_config(load_train_config("demo").data.augmentation) == AugmentConfig()
    cfg = load_train_config("demo", ["data.augmentation.hflip=0", "data.augmentation.scale=[0.8,1.0]",
                                     "data.augmentation.brightness=0"])
    aug = augment_config(cfg.data.augmentation)
    assert aug.hflip == 0.0 and aug.scale == (0.8, 1.0) and aug.brightness == 0.0 and aug.contrast == 0.2


@pytest.mark.parametrize("override, words", [
    ("data.augmentation.scale=[0.8,1.2]", "0 < min <= max <= 1"),
    ("data.augmentation.scale=[0.9,0.8]", "0 < min <= max <= 1"),
    ("data.augmentation.scale=[0.5]", "[min, max]"),
    ("data.augmentation.ratio=[0,1]", "0 < min <= max"),
    ("data.augmentation.hflip=1.5", "<= 1.0"),
    ("data.augmentation.contrast=-0.1", ">= 0.0"),
])
def test_bad_augmentation_strengths_name_the_key(override, words):
    with pytest.raises(TrainConfigError) as err:
        load_train_config("demo", [override])
    key = override.split("=")[0]
    assert f"key '{key}'" in str(err.value) and words in str(err.value)
