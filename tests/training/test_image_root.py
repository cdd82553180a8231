"""``data.image_root``: a run whose dataset directory moved since its graph store was built."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from graph.dataset import build_graph_from_dataset
from graph.features import ImageRootError
from training.config import load_train_config
from training.embed import embed_run, load_embeddings
from training.trainer import Trainer


def test_a_moved_dataset_fails_at_start_and_data_image_root_fixes_training_and_embedding(
        tiny_world, make_config, tmp_path):
    world = shutil.copytree(tiny_world, tmp_path / "old" / "world")
    store = tmp_path / "graph"
    build_graph_from_dataset(world, store, progress=False)
    new = tmp_path / "new" / "world"
    new.parent.mkdir()
    os.rename(world, new)
    cfg = make_config(data={"dataset": None, "graph": str(store)}, train={"max_steps": 2, "checkpoint_every": 2})

    with pytest.raises(ImageRootError) as err:
        Trainer(load_train_config(cfg), tmp_path / "refused")
    msg = str(err.value)
    assert str(world) in msg and "data.image_root=" in msg

    with pytest.raises(ImageRootError, match="data.image_root=.*nowhere"):
        Trainer(load_train_config(cfg, [f"data.image_root={tmp_path / 'nowhere'}"]), tmp_path / "refused2")

    run = tmp_path / "run"
    summary = Trainer(load_train_config(cfg, [f"data.image_root={new}"]), run).train()
    assert summary["steps"] == 2
    assert load_train_config(run / "config.yaml", check_devices=False).data.image_root == str(new)
    out = embed_run(run, tmp_path / "emb", device="cpu", progress=False, log=lambda *_: None)
    e = load_embeddings(out, mmap=False)
    assert e["fused"].shape[0] == 160 and not np.asarray(e["image_missing"]).all()
