"""The trainer in-process: a short run, exact resume, the non-finite guard, run-directory and
checkpoint errors."""
from __future__ import annotations

import json
import math

import pytest
import torch

from training import step as step_mod
from training.checkpoint import CheckpointError, list_checkpoints
from training.config import load_train_config
from training.logging_utils import read_jsonl
from training.trainer import RunDirError, Trainer, TrainingError


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl")]


def test_short_run_writes_logs_checkpoints_and_config(make_config, tmp_path):
    run = tmp_path / "run"
    cfg = load_train_config(make_config(eval={"at_end": True, "max_queries": 50}))
    summary = Trainer(cfg, run).train()
    assert summary["steps"] == 6
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    for r in rows:
        assert math.isfinite(r["loss"]) and 0.0 <= r["data_wait_share"] <= 1.0
        assert {"clip_loss", "neighbor_fused_loss", "lr", "samples_per_s", "data_wait_s", "compute_s"} <= set(r)
    assert [s for s, _ in list_checkpoints(run)] == [3, 6]
    saved = load_train_config(run / "config.yaml")
    assert saved.train.max_steps == 6 and saved.data.dataset == cfg.data.dataset
    assert json.loads((run / "model_config.json").read_text())["embed_dim"] == 16
    ev = read_jsonl(run / "eval.jsonl")
    assert ev and ev[-1]["step"] == 6 and 0.0 <= ev[-1]["board_centroid_recall@10"] <= 1.0
    assert "board_recall@10" not in ev[-1]      # the pin -> board-mate metric of `pinclip evaluate` is another
    # The warmup + cosine schedule: lr rises for warmup_steps, then decays.
    lrs = [r["lr"] for r in rows]
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[2]


def test_resume_in_process_matches_uninterrupted(make_config, tmp_path):
    cfg = make_config(train={"max_steps": 12, "checkpoint_every": 4})   # 9 batches per epoch: crosses one
    straight = tmp_path / "straight"
    Trainer(load_train_config(cfg), straight).train()
    part = tmp_path / "part"
    Trainer(load_train_config(cfg), part).train(stop_after=6)   # interrupted after step 6, checkpoint at 4
    assert [s for s, _ in list_checkpoints(part)] == [4]
    assert len(losses(part)) == 6
    Trainer(None, part, resume=True).train()
    assert losses(part) == losses(straight)


def test_resume_before_the_first_checkpoint_starts_over(make_config, tmp_path):
    cfg = make_config(train={"max_steps": 4, "checkpoint_every": 10})
    straight = tmp_path / "straight"
    Trainer(load_train_config(cfg), straight).train()
    part = tmp_path / "part"
    Trainer(load_train_config(cfg), part).train(stop_after=2)
    assert not list_checkpoints(part) and len(losses(part)) == 2
    Trainer(None, part, resume=True).train()
    assert losses(part) == losses(straight)
    # A finished run resumed without more steps does nothing.
    summary = Trainer(None, part, resume=True).train()
    assert summary["steps"] == 4 and len(losses(part)) == 4


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_bf16_autocast_and_accumulation(make_config, tmp_path, device):
    cfg = make_config(model={"precision": "bf16"}, train={"max_steps": 2, "accum_freq": 2, "device": device})
    summary = Trainer(load_train_config(cfg), tmp_path / "run").train()
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["steps"] == 2 and all(math.isfinite(r["loss"]) for r in rows)


def test_resume_with_more_steps_follows_the_new_schedule(make_config, tmp_path):
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 4})), run).train()
    Trainer(None, run, resume=True, overrides=["train.max_steps=8"]).train()
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))
    from training.trainer import cosine_lr_lambda
    f = cosine_lr_lambda(1e-3, 0.0, 2, 8)
    assert rows[4]["lr"] == pytest.approx(1e-3 * f(4))


def test_fresh_run_refuses_an_existing_run(make_config, tmp_path):
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 1})), run).train()
    with pytest.raises(RunDirError, match="already holds a training run"):
        Trainer(load_train_config(make_config()), run)
    with pytest.raises(RunDirError, match="no config.yaml"):
        Trainer(None, tmp_path / "nothing", resume=True)


def test_corrupt_checkpoint_is_an_error_not_a_fresh_start(make_config, tmp_path):
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 3})), run).train()
    pt = run / "checkpoints" / "step_00000003.pt"
    data = bytearray(pt.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pt.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Trainer(None, run, resume=True, overrides=["train.max_steps=6"])
    pt.write_bytes(bytes(data[:100]))
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        Trainer(None, run, resume=True, overrides=["train.max_steps=6"])


def test_incompatible_checkpoint_is_an_error(make_config, tmp_path):
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 3})), run).train()
    with pytest.raises(CheckpointError, match="model config differs in embed_dim"):
        Trainer(None, run, resume=True, overrides=["model.overrides.embed_dim=32",
                                                   "model.overrides.matryoshka_dims=[8,32]"])
    with pytest.raises(CheckpointError, match="batch_size"):
        Trainer(None, run, resume=True, overrides=["train.batch_size=8"])


def test_nonfinite_steps_are_skipped_then_stop_the_run(make_config, tmp_path, monkeypatch):
    real = step_mod.compute_gradients
    bad_steps = {2, 4, 5, 6}
    calls = {"n": 0}

    def flaky(model, *args, **kwargs):
        calls["n"] += 1
        terms = real(model, *args, **kwargs)
        if calls["n"] in bad_steps:
            terms["loss"] = terms["loss"] * float("nan")
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("nan"))
        return terms

    monkeypatch.setattr(step_mod, "compute_gradients", flaky)
    run = tmp_path / "run"
    trainer = Trainer(load_train_config(make_config(train={"max_steps": 8, "max_nonfinite_steps": 3})), run)
    with pytest.raises(TrainingError, match="3 consecutive steps had a non-finite loss"):
        trainer.train()
    events = [e for e in read_jsonl(run / "events.jsonl") if e.get("event") == "skipped_step"]
    assert [e["step"] for e in events] == [2, 4, 5, 6]
    # Parameters never took a NaN: skipped steps do not update.
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["skipped"] for r in rows] == [0, 1, 0, 1, 1, 1]


def test_lr_scale_gives_parameter_groups_their_own_learning_rate():
    from types import SimpleNamespace

    from pinclip.factory import create_model
    from training.config import TrainConfigError
    from training.trainer import build_optimizer
    from tests.pinclip.conftest import tiny_config

    model = create_model(tiny_config())
    base = dict(lr=1e-3, weight_decay=0.05, betas=[0.9, 0.98], eps=1e-6)
    plain = build_optimizer(model, SimpleNamespace(**base, lr_scale={}))
    assert [g["lr"] for g in plain.param_groups] == [1e-3, 1e-3]   # unchanged without lr_scale
    opt = build_optimizer(model, SimpleNamespace(**base, lr_scale={"text_proj": 0.1, "text_proj.1": 0.5}))
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    params = dict(model.named_parameters())
    assert lr_of[id(params["text_proj.0.weight"])] == pytest.approx(1e-4)
    assert lr_of[id(params["text_proj.1.weight"])] == pytest.approx(5e-4)   # the longest prefix wins
    assert decay_of[id(params["text_proj.1.weight"])] == 0.05 and decay_of[id(params["text_proj.1.bias"])] == 0.0
    assert lr_of[id(params["image_proj.1.weight"])] == pytest.approx(1e-3)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert sum(len(g["params"]) for g in opt.param_groups) == sum(p.requires_grad for p in model.parameters())
    with pytest.raises(TrainConfigError, match=r"optim\.lr_scale.*\['txt_proj'\]"):
        build_optimizer(model, SimpleNamespace(**base, lr_scale={"txt_proj": 0.1}))
    with pytest.raises(TrainConfigError, match=r"optim\.lr_scale\.text_proj must be > 0"):
        build_optimizer(model, SimpleNamespace(**base, lr_scale={"text_proj": 0.0}))


def test_the_training_transform_uses_the_configured_augmentation(make_config, tmp_path):
    """data.augmentation reaches the training fetcher; evaluation keeps the plain transform."""
    from pinclip.transforms import AugmentConfig
    cfg = make_config(data={"augmentation": {"hflip": 0.0, "scale": [0.9, 1.0], "saturation": 0.0}})
    t = Trainer(load_train_config(cfg), tmp_path / "run")
    assert t.fetcher.transform.train and not t.eval_fetcher.transform.train
    assert t.fetcher.transform.aug == AugmentConfig(scale=(0.9, 1.0), hflip=0.0, saturation=0.0)
