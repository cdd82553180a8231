"""Gradient accumulation with cached features: the accumulated gradient is the full-batch one."""
from __future__ import annotations

import pytest
import torch

from training.config import load_train_config
from training.step import compute_gradients
from training.trainer import Trainer


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("text", ["frozen", "train_all"])
def test_accumulated_gradient_equals_full_batch_gradient(make_config, tmp_path, text):
    cfg = make_config(sampler={"pairs": {"num_positives": 2, "num_negatives": 8, "num_hard_negatives": 1},
                               "pinsage": {"num_random_walks": 20, "num_neighbors": 5}})
    cfg["model"]["overrides"]["text"]["freeze"] = text
    trainer = Trainer(load_train_config(cfg), tmp_path / "run")
    model, loss_fn = trainer.model, trainer.loss_fn
    batch = trainer.dataset[(1, 0)]        # epoch 1: one hard negative per seed (curriculum off: 1)
    assert batch.negative_rows is not None and batch.positive_rows is not None
    assert ("text_features" in batch.text) == (text == "frozen")
    model.train()
    model.zero_grad(set_to_none=True)
    full = compute_gradients(model, loss_fn, batch, accum_freq=1)
    g_full = grads(model)
    for accum in (2, 3):
        model.zero_grad(set_to_none=True)
        acc = compute_gradients(model, loss_fn, batch, accum_freq=accum)
        g_acc = grads(model)
        assert set(acc) == set(full)
        for k in full:
            torch.testing.assert_close(acc[k], full[k], rtol=1e-5, atol=1e-6)
        assert set(g_acc) == set(g_full)
        for name in g_full:
            torch.testing.assert_close(g_acc[name], g_full[name], rtol=1e-4, atol=1e-6, msg=name)
    # The logit scales are counted once, not accum_freq times.
    assert model.logit_scale.grad is not None and model.neighbor_logit_scale.grad is not None
