"""Every shipped Hugging Face training config, end to end on the CPU from the tiny random
checkpoints of :mod:`pinclip.testing.tiny_checkpoints`: train 2 steps, resume to 3, evaluate,
export, and load the exported model directory with ``pinclip.load``. Each config gets only path
overrides (checkpoints, dataset, cache) and size overrides (image sizes, fusion layers, batch and
sampler sizes, steps): whatever else the shipped file says is what runs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pinclip
from graph import PinBoardGraph
from training.cli import main
from training.config import list_train_configs

# config name -> the path overrides it needs ({family} is a tiny checkpoint folder).
SHIPPED_HF = {
    "gpu_hf_clip": ["model.overrides.vision.pretrained={clip_vision}"],
    "gpu_hf_siglip": ["model.overrides.vision.pretrained={siglip}"],
    "gpu_qwen2vl": ["model.overrides.vision.pretrained={qwen2_vl}"],
    "vlm_joint": ["model.overrides.vlm.pretrained={qwen2_vl}"],
}
SIZES = ["model.overrides.vision.image_size=32", "model.overrides.fusion.patch_layers=[-1]",
         "model.overrides.fusion.width=32", "model.overrides.fusion.heads=2",
         "model.overrides.fusion.num_queries=2", "model.overrides.fusion.region_grid=2",
         "sampler.pinsage.num_random_walks=20", "sampler.pinsage.num_neighbors=5",
         "sampler.pairs.num_positives=2", "sampler.pairs.num_negatives=8",
         "train.batch_size=8", "train.accum_freq=1", "train.max_steps=2", "train.checkpoint_every=2",
         "train.log_every=1", "train.progress=false", "train.tensorboard=false", "eval.at_end=false",
         "eval.batch_size=64", "data.num_workers=0"]


def test_every_shipped_hf_config_is_covered():
    """A new Hugging Face config must get its end-to-end test here."""
    hf = {name for name in list_train_configs() if name.startswith(("gpu_", "vlm_"))}
    assert hf == set(SHIPPED_HF)


@pytest.mark.parametrize("name", sorted(SHIPPED_HF))
def test_shipped_hf_config_end_to_end(name, hf_checkpoints, tiny_world, tmp_path):
    run, model_dir = tmp_path / "run", tmp_path / "model"
    overrides = [o.format(**hf_checkpoints) for o in SHIPPED_HF[name]] + SIZES + [
        f"data.dataset={tiny_world}", f"data.cache_dir={tmp_path / 'cache'}",
        f"model.overrides.text.pretrained={hf_checkpoints['bert']}"]
    if name == "vlm_joint":
        overrides.append("model.overrides.vlm.image_size=32")
    assert main(["train", "--config", name, "--out", str(run), "--quiet", *overrides]) == 0
    assert main(["train", "--resume", str(run), "--quiet", "train.max_steps=3"]) == 0
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert all(np.isfinite(json.loads(line)["loss"]) for line in (run / "metrics.jsonl").read_text().splitlines())
    assert main(["evaluate", str(run), "--quiet"]) == 0
    evaluation = json.loads((run / "evaluation.json").read_text())
    assert evaluation["step"] == 3
    assert main(["export", str(run), "--out", str(model_dir), "--quiet"]) == 0
    enc = pinclip.load(model_dir)
    g = PinBoardGraph.open(run / "graph")
    pins = np.arange(8)
    fused = enc.encode_pins(g.features.pin_image_paths(pins), g.features.pin_text(pins))
    assert fused.shape == (8, enc.embed_dim) and torch.isfinite(fused).all()
    from training.embed import load_embeddings
    emb = load_embeddings(run / "embeddings")
    # The exported model gives the run's own embeddings (pinclip embed of the newest checkpoint).
    assert (fused - torch.from_numpy(np.array(emb["fused"][:8]))).abs().max().item() < 1e-4
    if name == "vlm_joint":
        assert enc.model.vlm is not None and enc.model.fusion.use_vlm
