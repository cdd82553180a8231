"""`pinclip train` / `pinclip embed` as subprocesses: a run killed with SIGKILL between
checkpoints and resumed logs exactly the losses of an uninterrupted run; config errors; embed."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from training.logging_utils import read_jsonl


def pinclip(args, env, check=True):
    proc = subprocess.run([sys.executable, "-m", "training", *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"pinclip {args[0]} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def losses(run_dir):
    return [(r["step"], r["loss"]) for r in read_jsonl(run_dir / "metrics.jsonl")]


@pytest.fixture
def config_file(make_config, tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(make_config(train={"max_steps": 10, "checkpoint_every": 4, "log_every": 1,
                                                      "progress": False, "tensorboard": False})))
    return path


def test_sigkill_between_checkpoints_then_resume_matches_uninterrupted(config_file, tmp_path, cli_env):
    straight = tmp_path / "straight"
    pinclip(["train", "--config", config_file, "--out", straight], cli_env)
    reference = losses(straight)
    assert [s for s, _ in reference] == list(range(1, 11))

    for workers in (0, 2):
        run = tmp_path / f"killed{workers}"
        env = dict(cli_env, PINCLIP_DEBUG_KILL_AT_STEP="6")     # after step 6: checkpoint at 4 only
        proc = pinclip(["train", "--config", config_file, "--out", run, f"data.num_workers={workers}"], env,
                       check=False)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        assert [s for s, _ in losses(run)] == [1, 2, 3, 4, 5, 6]
        assert sorted(p.name for p in (run / "checkpoints").glob("*.json")) == ["step_00000004.json"]
        pinclip(["train", "--resume", run], cli_env)
        assert losses(run) == reference, f"num_workers={workers}"


def test_config_errors_name_the_key(config_file, tmp_path, cli_env):
    proc = pinclip(["train", "--config", config_file, "--out", tmp_path / "r", "train.max_stepz=3"], cli_env,
                   check=False)
    assert proc.returncode == 2 and "unknown key 'train.max_stepz'" in proc.stderr and "max_steps" in proc.stderr
    proc = pinclip(["train", "--config", config_file, "--out", tmp_path / "r", "optim.lr=-1"], cli_env, check=False)
    assert proc.returncode == 2 and "key 'optim.lr'" in proc.stderr
    assert not (tmp_path / "r" / "config.yaml").exists()


def test_embed_writes_memory_mappable_arrays(config_file, tmp_path, cli_env):
    from training.embed import load_embeddings

    run = tmp_path / "run"
    pinclip(["train", "--config", config_file, "--out", run, "train.max_steps=2"], cli_env)
    out = tmp_path / "emb"
    proc = pinclip(["embed", run, "--out", out, "--batch-size", "64", "--quiet"], cli_env)
    assert "160 pins x 16" in proc.stdout
    e = load_embeddings(out)
    assert e["manifest"]["step"] == 2 and e["manifest"]["num_pins"] == 160
    for key in ("image", "text", "fused"):
        assert isinstance(e[key], np.memmap) and e[key].shape == (160, 16) and e[key].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(e[key], axis=1), 1.0, rtol=1e-5)
    assert e["pin_ids"].tolist() == list(range(160)) and e["pin_external_ids"] == list(range(160))
    assert int(e["cold_start"].sum()) == 16 and not e["image_missing"].any()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dtype"] == "float32" and manifest["dim"] == 16
