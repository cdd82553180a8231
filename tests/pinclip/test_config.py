"""The model config registry: listing, user configs, overrides, and errors that name the key."""
import json
from pathlib import Path

import pytest

from pinclip import factory
from pinclip.config import ConfigError, PinCLIPConfig, config_from_dict, config_to_dict
from pinclip.factory import add_model_config, create_model, get_model_config, list_models

from .conftest import tiny_config

SHIPPED = {"pinclip-tiny-demo", "pinclip-vit-b16-minilm", "pinclip-clip-vit", "pinclip-siglip",
           "pinclip-qwen2vl", "pinclip-qwen2vl-joint", "pinclip-tiny-scratch-text"}


def test_shipped_configs_are_listed_and_parse():
    assert SHIPPED <= set(list_models())
    for name in SHIPPED:
        cfg = get_model_config(name)
        assert isinstance(cfg, PinCLIPConfig) and cfg.name == name
        assert config_from_dict(config_to_dict(cfg)) == cfg  # round trip
    demo = get_model_config("pinclip-tiny-demo")
    assert (demo.vision.image_size, demo.vision.patch_size, demo.vision.width, demo.vision.layers) == (64, 8, 128, 4)
    assert demo.text.freeze == "frozen" and demo.text.pretrained == "builtin:all-MiniLM-L6-v2"
    assert get_model_config("pinclip-vit-b16-minilm").vision.image_size == 224


def test_get_model_config_returns_a_copy():
    cfg = get_model_config("pinclip-tiny-demo")
    cfg.vision.layers = 99
    assert get_model_config("pinclip-tiny-demo").vision.layers == 4


def test_unknown_model_name_lists_available():
    with pytest.raises(KeyError, match="pinclip-tiny-demo"):
        get_model_config("no-such-model")


def test_add_model_config_from_file_folder_and_dict(tmp_path):
    data = tiny_config()
    data.pop("name")
    (tmp_path / "user-tiny.json").write_text(json.dumps(data))
    assert add_model_config(tmp_path / "user-tiny.json") == ["user-tiny"]
    folder = tmp_path / "more"
    folder.mkdir()
    (folder / "user-tiny-2.json").write_text(json.dumps(data))
    assert add_model_config(folder) == ["user-tiny-2"]
    assert add_model_config({**data, "embed_dim": 8}, name="user-tiny-3") == ["user-tiny-3"]
    assert {"user-tiny", "user-tiny-2", "user-tiny-3"} <= set(list_models())
    assert get_model_config("user-tiny-3").embed_dim == 8
    model = create_model("user-tiny", embed_dim=8)
    assert model.embed_dim == 8
    # clean up the global registry for other tests
    for name in ("user-tiny", "user-tiny-2", "user-tiny-3"):
        factory._MODEL_CONFIGS.pop(name)
    factory._MODEL_CONFIG_PATHS.remove(folder)


@pytest.mark.parametrize("patch, key", [
    ({"vision": {"widht": 32}}, "vision.widht"),
    ({"fusion": {"regions": 2}}, "fusion.regions"),
    ({"loss": {"clip_weight": 1.0}}, "loss.clip_weight"),
    ({"embedding_dim": 8}, "embedding_dim"),
])
def test_unknown_keys_name_the_key_and_the_config(patch, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(**patch), "my-model")
    assert f"'{key}'" in str(err.value) and "'my-model'" in str(err.value)


@pytest.mark.parametrize("patch, key", [
    ({"vision": {"type": "resnet"}}, "vision.type"),
    ({"vision": {"freeze": "some"}}, "vision.freeze"),
    ({"vision": {"layers": "two"}}, "vision.layers"),
    ({"vision": {"image_size": 30}}, "vision.image_size"),
    ({"fusion": {"patch_layers": [5]}}, "fusion.patch_layers"),
    ({"fusion": {"use_global": False, "region_grid": 0, "patch_layers": [], "use_text_tokens": False}},
     "fusion.early_fusion"),
    ({"matryoshka_dims": [8, 4]}, "matryoshka_dims"),
    ({"loss": {"image_text": "triplet"}}, "loss.image_text"),
    ({"vision": {"type": "hf_clip"}}, "vision.pretrained"),
    ({"text": {"freeze": "train_last_n"}}, "text.unfreeze_last_n"),
    ({"vision": {"heads": 0}}, "vision.heads"),
    ({"vision": {"width": 0}}, "vision.width"),
    ({"vision": {"patch_size": 0}}, "vision.patch_size"),
    ({"vision": {"stem": "resnet"}}, "vision.stem"),
    ({"vision": {"stem": "conv", "image_size": 36, "patch_size": 6}}, "vision.stem"),
    ({"fusion": {"heads": 0}}, "fusion.heads"),
    ({"fusion": {"layers": 0}}, "fusion.layers"),
    ({"text": {"type": "scratch", "heads": 0}}, "text.heads"),
])
def test_bad_values_name_the_key(patch, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(tiny_config(**patch), "bad")


def test_bad_registered_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"vision": {"patchsize": 8}}))
    with pytest.raises(ConfigError, match="vision.patchsize") as err:
        add_model_config(path)
    assert str(path) in str(err.value) and "'broken'" in str(err.value)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="invalid JSON"):
        add_model_config(path)


def test_create_model_overrides_nested_and_dotted():
    model = create_model(tiny_config(), embed_dim=8, vision={"layers": 1},
                         **{"fusion.region_grid": 0, "fusion.patch_layers": [-1]})
    assert model.embed_dim == 8 and model.visual.num_layers == 1 and model.fusion.region_grid == 0
    with pytest.raises(ConfigError, match="vision.layerz"):
        create_model(tiny_config(), vision={"layerz": 1})


@pytest.mark.parametrize("patch, key", [
    ({"init_logit_scale": float("nan")}, "init_logit_scale"),
    ({"max_logit_scale": float("inf")}, "max_logit_scale"),
    ({"vision": {"mlp_ratio": float("-inf")}}, "vision.mlp_ratio"),
    ({"vision": {"image_mean": [0.5, float("nan"), 0.5]}}, r"vision.image_mean[1]"),
    ({"loss": {"image_text_weight": float("nan")}}, "loss.image_text_weight"),
])
def test_nonfinite_floats_name_the_key(patch, key):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(**patch), "bad")
    assert f"key '{key}'" in str(err.value) and "is not a finite number" in str(err.value)


def test_nonfinite_float_in_a_json_file_is_refused(tmp_path):
    # Python's JSON reader accepts NaN and Infinity literals.
    data = tiny_config()
    data.pop("name")
    path = tmp_path / "nan-model.json"
    path.write_text(json.dumps(data).replace('"embed_dim"', '"init_logit_bias": NaN, "embed_dim"'))
    with pytest.raises(ConfigError, match=r"key 'init_logit_bias' = nan is not a finite number"):
        add_model_config(path)


# ---------------------------------------------------------------- fusion layers follow the tower depth
# What each shipped config's fusion.patch_layers resolved to before depth shares ("50%") existed:
# the shipped configs must keep these layers at their default depth (the demo's numbers depend on it).
SHIPPED_PATCH_LAYERS = {"pinclip-tiny-demo": (4, [2, 4]), "pinclip-tiny-scratch-text": (4, [2, 4]),
                        "pinclip-vit-b16-minilm": (12, [6, 9, 12]), "pinclip-clip-vit": (12, [6, 9, 12]),
                        "pinclip-siglip": (12, [6, 9, 12]), "pinclip-qwen2vl": (32, [32])}
TINY_DEMO_OVERRIDES = {"vision": {"width": 32, "heads": 2, "image_size": 32},
                       "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2},
                       "fusion": {"width": 32, "heads": 2}}


def test_shipped_configs_resolve_to_the_same_layers_at_their_default_depth():
    from pinclip.vit import resolve_layers
    for name, (depth, layers) in SHIPPED_PATCH_LAYERS.items():
        cfg = get_model_config(name)
        if cfg.vision.type == "vit":
            assert cfg.vision.layers == depth
        assert resolve_layers(cfg.fusion.patch_layers, depth) == layers, name
    model = create_model("pinclip-tiny-demo", **TINY_DEMO_OVERRIDES)
    assert model.fusion.patch_layers == [2, 4]


@pytest.mark.parametrize("depth, layers", [(1, [1]), (2, [1, 2]), (3, [2, 3]), (6, [3, 6])])
def test_shipped_demo_config_composes_with_vision_layers(depth, layers):
    model = create_model("pinclip-tiny-demo", **TINY_DEMO_OVERRIDES, **{"vision.layers": depth})
    assert model.visual.num_layers == depth and model.fusion.patch_layers == layers


def test_a_registered_copy_of_a_shipped_config_composes(tmp_path):
    path = tmp_path / "my-demo.json"
    shipped = Path(factory.__file__).parent / "model_configs" / "pinclip-tiny-demo.json"
    data = json.loads(shipped.read_text())
    data["vision"]["layers"] = 2
    path.write_text(json.dumps(data))
    try:
        assert add_model_config(path) == ["my-demo"]
        model = create_model("my-demo", **TINY_DEMO_OVERRIDES)
        assert model.visual.num_layers == 2 and model.fusion.patch_layers == [1, 2]
    finally:
        factory._MODEL_CONFIGS.pop("my-demo", None)


def test_share_layers_resolve_exactly():
    from pinclip.config import resolve_patch_layers
    assert resolve_patch_layers(["50%", "75%", "100%"], 12) == [6, 9, 12]
    assert resolve_patch_layers(["10%", "30%"], 30) == [3, 9]   # exact: no float 0.1 * 30 = 3.0000000000000004
    assert resolve_patch_layers(["1%", -1, 2], 5) == [1, 2, 5]


@pytest.mark.parametrize("layers, patch_layers, bad",
                         [(2, [4], "layer 4"), (2, [1, -3], "layer -3"), (1, [2], "layer 2")])
def test_patch_layers_beyond_the_depth_name_both_keys_and_the_fix(layers, patch_layers, bad):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(vision={"layers": layers}, fusion={"patch_layers": patch_layers}), "bad")
    msg = str(err.value)
    assert "'fusion.patch_layers'" in msg and f"'vision.layers' is {layers}" in msg and bad in msg
    valid = "1 or -1" if layers == 1 else f"1..{layers} or -{layers}..-1"
    assert f"valid: {valid}" in msg and "Fix:" in msg and "'50%', '100%'" in msg
    assert "--" not in msg and "1..-" not in msg


@pytest.mark.parametrize("layers", [0, -1])
def test_vision_layers_below_one_has_its_own_message(layers):
    with pytest.raises(ConfigError) as err:
        config_from_dict(tiny_config(vision={"layers": layers}), "bad")
    assert str(err.value) == (f"model config 'bad': key 'vision.layers' must be >= 1 (the number of transformer "
                              f"blocks of the ViT), got {layers}")


@pytest.mark.parametrize("entry", ["0%", "101%", "half", 0, "%"])
def test_malformed_patch_layers_entries_are_refused(entry):
    with pytest.raises(ConfigError, match=r"fusion\.patch_layers.*share of the depth like '50%'"):
        config_from_dict(tiny_config(fusion={"patch_layers": [entry]}), "bad")
