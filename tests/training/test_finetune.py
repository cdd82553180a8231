"""Fine-tuning pretrained towers in the trainer: LoRA adapters resume exactly and are merged on
export; layer-wise learning-rate decay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from training.checkpoint import list_checkpoints
from training.config import load_train_config
from training.logging_utils import read_jsonl
from training.trainer import Trainer


def _vision(hf_checkpoints, **extra):
    return {"type": "hf_clip", "pretrained": hf_checkpoints["clip_vision"], "image_size": 32, "freeze": "frozen", **extra}


def test_lora_run_resumes_exactly_and_exports_a_merged_model(make_config, hf_checkpoints, tmp_path):
    import pinclip
    from training.embed import embed_run, load_embeddings
    from training.export import export_run
    cfg = make_config(train={"max_steps": 4, "checkpoint_every": 2})
    cfg["model"]["overrides"]["vision"] = _vision(hf_checkpoints, lora={"rank": 2})
    cfg["model"]["overrides"]["fusion"]["patch_layers"] = [-1]
    straight, part = tmp_path / "straight", tmp_path / "part"
    Trainer(load_train_config(cfg), straight).train()
    Trainer(load_train_config(cfg), part).train(stop_after=3)
    assert [s for s, _ in list_checkpoints(part)] == [2]
    Trainer(None, part, resume=True).train()
    assert [r["loss"] for r in read_jsonl(part / "metrics.jsonl")] == \
        [r["loss"] for r in read_jsonl(straight / "metrics.jsonl")]
    # The adapters moved (they start at zero) and are in the checkpoint.
    state = torch.load(sorted((straight / "checkpoints").glob("*.pt"))[-1], map_location="cpu", weights_only=False)
    lora_b = [v for k, v in state["model"].items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)
    export_run(straight, tmp_path / "model")
    enc = pinclip.load(tmp_path / "model")
    assert enc.config.vision.lora.rank == 0 and not any("lora_" in n for n, _ in enc.model.named_parameters())
    embed_run(straight, tmp_path / "emb", batch_size=32, device="cpu", num_workers=0, progress=False,
              log=lambda *_: None)
    emb = load_embeddings(tmp_path / "emb")
    from graph import PinBoardGraph
    g = PinBoardGraph.open(straight / "graph")
    pins = np.arange(16)
    got = enc.encode_pins(g.features.pin_image_paths(pins), g.features.pin_text(pins))
    assert (got - torch.from_numpy(np.array(emb["fused"][:16]))).abs().max().item() < 1e-4


def test_layer_decay_scales_each_block(hf_checkpoints):
    from omegaconf import OmegaConf

    from pinclip.factory import create_model
    from training.optim import build_optimizer
    model = create_model("pinclip-tiny-demo", embed_dim=16, matryoshka_dims=[],
                         vision=_vision(hf_checkpoints, freeze="train_all"),
                         text={"type": "scratch", "context_length": 12, "width": 32, "layers": 2, "heads": 2,
                               "freeze": "train_all"},
                         fusion={"width": 32, "heads": 2, "num_queries": 2, "layers": 1, "patch_layers": [-1]})
    cfg = OmegaConf.create({"lr": 1.0, "weight_decay": 0.1, "betas": [0.9, 0.98], "eps": 1e-6, "lr_scale": {},
                            "layer_decay": 0.5})
    opt = build_optimizer(model, cfg)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    vm = "visual.model"
    assert lr_of[id(named[f"{vm}.encoder.layers.1.mlp.fc1.weight"])] == 1.0      # the last block of 2
    assert lr_of[id(named[f"{vm}.encoder.layers.0.mlp.fc1.weight"])] == 0.5
    assert lr_of[id(named[f"{vm}.embeddings.patch_embedding.weight"])] == 0.25   # below the blocks
    assert lr_of[id(named[f"{vm}.post_layernorm.weight"])] == 1.0                # after the blocks
    assert lr_of[id(named["text.transformer.resblocks.0.mlp.0.weight"])] == 0.5
    assert lr_of[id(named["text.token_embedding.weight"])] == 0.25
    assert lr_of[id(named["fusion.queries"])] == 1.0 and opt.param_groups[0]["lr"] == 1.0
    cfg.layer_decay = 1.0
    assert {g["lr"] for g in build_optimizer(model, cfg).param_groups} == {1.0}
