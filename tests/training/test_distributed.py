"""Data parallel: two CPU processes (torchrun, gloo) train a few steps and stay in sync."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import yaml

from training.logging_utils import read_jsonl


def test_two_cpu_ranks_stay_in_sync(make_config, tmp_path, cli_env):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(make_config(train={"max_steps": 4, "checkpoint_every": 2, "batch_size": 8,
                                                        "accum_freq": 2})))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training", "train", "--config", str(config), "--out", str(run)]
    proc = subprocess.run(cmd, env=cli_env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 4
    digests = summary["param_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]          # identical parameters on both ranks
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in rows)
    # Every rank saw its own shard: 2 x 8 seeds per step.
    assert rows[-1]["samples"] == 4 * 16
    assert len(list((run / "checkpoints").glob("*.json"))) == 2    # rank 0 writes, once per checkpoint
