"""Training and embedding on CUDA end to end: ``model.precision: auto`` means bf16 autocast there,
sampling can run on the GPU in the main process, and a CUDA export agrees with a CPU one.
(``test_trainer.py::test_bf16_autocast_and_accumulation`` covers explicit bf16 on each device.)
Skipped without CUDA: the development machines have none."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from training.config import load_train_config
from training.logging_utils import read_jsonl
from training.trainer import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_auto_precision_is_bf16_on_cuda_with_gpu_sampling(make_config, tmp_path):
    cfg = make_config(model={"precision": "auto"}, train={"max_steps": 3, "device": "cuda", "checkpoint_every": 3},
                      sampler={"device": "cuda"}, data={"num_workers": 0})
    trainer = Trainer(load_train_config(cfg), tmp_path / "run")
    assert trainer.device.type == "cuda" and next(trainer.model.parameters()).is_cuda
    seen = set()
    linears = [m for m in trainer.model.modules() if isinstance(m, torch.nn.Linear)]
    hooks = [m.register_forward_hook(lambda mod, inp, out: seen.add(out.dtype)) for m in linears]
    try:
        summary = trainer.train()
    finally:
        for h in hooks:
            h.remove()
    assert torch.bfloat16 in seen                                  # autocast ran the matmuls in bf16
    assert next(trainer.model.parameters()).dtype == torch.float32  # master weights stay fp32
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert summary["steps"] == 3 and all(math.isfinite(r["loss"]) for r in rows)


def test_cuda_export_agrees_with_cpu(make_config, tmp_path):
    from training.embed import embed_run, load_embeddings

    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 2, "checkpoint_every": 2})), run).train()
    embed_run(run, tmp_path / "cpu", device="cpu", batch_size=64, progress=False, log=lambda *_: None)
    embed_run(run, tmp_path / "gpu", device="cuda", batch_size=64, progress=False, log=lambda *_: None)
    a, b = load_embeddings(tmp_path / "cpu"), load_embeddings(tmp_path / "gpu")
    for key in ("image", "text", "fused"):
        # bf16 autocast on CUDA against fp32 on the CPU: unit vectors agree to about 1e-2
        cos = np.einsum("pd,pd->p", np.asarray(a[key]), np.asarray(b[key]))
        assert cos.min() > 0.99, (key, cos.min())
