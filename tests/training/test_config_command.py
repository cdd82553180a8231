"""Training configs travel (``base:`` relative to the file, or a shipped name), ``pinclip config``
(show, list, docs) and docs/CONFIG.md staying current; shipped model configs compose with
``model.overrides.vision.layers``."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from training.cli import main
from training.config import (CONFIG_DIR, TrainConfigError, config_reference_markdown, list_train_configs,
                             load_train_config, resolve_model_config)

REPO = Path(__file__).resolve().parents[2]


def _loss(cfg):
    return yaml.safe_load(yaml.safe_dump(dict(cfg.loss)))


def test_docs_config_md_is_current():
    # Regenerate with `pinclip config docs` after changing the schema or its docstrings.
    assert (REPO / "docs" / "CONFIG.md").read_text() == config_reference_markdown()


def test_the_reference_names_every_key():
    text = config_reference_markdown()
    for key in ("data.dataset", "sampler.pinsage.num_traversals", "sampler.pairs.mask_shared_boards",
                "model.overrides", "optim.betas", "train.max_steps", "eval.k"):
        assert f"| `{key}` |" in text
    assert "| `train.max_steps` | int | 200 | >= 1 |" in text


def test_a_copied_config_loads_from_another_folder(tmp_path):
    shipped = load_train_config("clip_only", check_devices=False)
    copy = tmp_path / "clip_only.yaml"
    shutil.copy(CONFIG_DIR / "clip_only.yaml", copy)       # says base: demo.yaml; no demo.yaml beside it
    assert load_train_config(copy, check_devices=False) == shipped
    for base in ("demo", "demo.yaml"):
        copy.write_text(f"base: {base}\nloss:\n  neighbor_weight: 0.0\n")
        assert load_train_config(copy, check_devices=False) == shipped


def test_a_base_beside_the_file_wins_over_the_shipped_one(tmp_path):
    (tmp_path / "demo.yaml").write_text("base: demo\ntrain:\n  max_steps: 7\n")   # itself based on the shipped demo
    (tmp_path / "mine.yaml").write_text("base: demo\noptim:\n  lr: 0.01\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.yaml").write_text("base: ../mine.yaml\n")
    cfg = load_train_config(tmp_path / "sub" / "deeper.yaml", check_devices=False)
    assert cfg.train.max_steps == 7 and cfg.optim.lr == 0.01 and cfg.train.batch_size == 64


def test_a_missing_base_names_the_file_and_the_shipped_configs(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: nope\n")
    with pytest.raises(TrainConfigError) as err:
        load_train_config(path, check_devices=False)
    msg = str(err.value)
    assert str(path) in msg and "key 'base' = 'nope'" in msg and all(n in msg for n in list_train_configs())
    path.write_text("base: [demo]\n")
    with pytest.raises(TrainConfigError, match="key 'base'"):
        load_train_config(path, check_devices=False)


def test_config_show_prints_the_resolved_yaml(capsys):
    assert main(["config", "show", "demo", "train.max_steps=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["train"]["max_steps"] == 3 and shown["model"]["name"] == "pinclip-tiny-demo"
    assert shown["train"]["batch_size"] == 64 and shown["optim"]["lr"] == 2.0e-3


def test_config_show_model_list_and_errors(capsys):
    assert main(["config", "show", "demo", "model.overrides.vision.layers=2", "--model"]) == 0
    out = capsys.readouterr().out
    assert '"layers": 2' in out and '"50%"' in out
    assert main(["config", "list"]) == 0
    assert capsys.readouterr().out.split()[::2] == list_train_configs()
    assert main(["config", "show", "demo", "train.max_steps=0"]) == 2
    assert "train.max_steps" in capsys.readouterr().err


def test_config_docs_check(tmp_path, capsys):
    out = tmp_path / "CONFIG.md"
    assert main(["config", "docs", "--out", str(out), "--check"]) == 1
    assert main(["config", "docs", "--out", str(out)]) == 0
    assert out.read_text() == config_reference_markdown()
    assert main(["config", "docs", "--out", str(out), "--check"]) == 0


def test_model_overrides_vision_layers_compose_with_the_shipped_model_config():
    cfg = load_train_config("demo", ["model.overrides.vision.layers=2"], check_devices=False)
    assert resolve_model_config(cfg).vision.layers == 2
    with pytest.raises(TrainConfigError) as err:
        load_train_config("demo", ["model.overrides.vision.layers=-1"], check_devices=False)
    assert "'vision.layers' must be >= 1" in str(err.value) and "got -1" in str(err.value)
    with pytest.raises(TrainConfigError) as err:
        load_train_config("demo", ["model.overrides.vision.layers=2", "model.overrides.fusion.patch_layers=[4]"],
                          check_devices=False)
    msg = str(err.value)
    assert "'fusion.patch_layers'" in msg and "'vision.layers' is 2" in msg and "Fix:" in msg
