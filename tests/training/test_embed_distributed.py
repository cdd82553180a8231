"""`pinclip embed` under torchrun: each rank embeds a batch-aligned shard, rank 0 merges them into
the same arrays a single process writes; missing, partial, foreign or corrupt shards are errors."""
from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from training.embed import load_embeddings, load_run
from training.embed_shards import EmbedShardError, _write_shard, merge_shards, shard_range

BATCH = 32   # the tiny world's 160 pins are 5 batches; 2 ranks get pins [0, 64) and [64, 160)
ARRAYS = ("image", "text", "fused", "pin_ids", "image_missing", "cold_start")


def _tiny_train_config(*args, **kwargs) -> dict:
    spec = importlib.util.spec_from_file_location("_training_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny_train_config(*args, **kwargs)


@pytest.fixture(scope="module")
def run_and_single(tmp_path_factory, tiny_world, text_cache_dir):
    """A 2-step run of the tiny world and its single-process export (one thread, as each rank)."""
    from training.config import load_train_config
    from training.embed import embed_run
    from training.trainer import Trainer
    root = tmp_path_factory.mktemp("embed_dist")
    cfg = _tiny_train_config(tiny_world, text_cache_dir, train={"max_steps": 2, "checkpoint_every": 2})
    Trainer(load_train_config(cfg), root / "run").train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        embed_run(root / "run", root / "single", batch_size=BATCH, device="cpu", num_workers=0, progress=False,
                  log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    return root / "run", root / "single"


def _env() -> dict:
    import os
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def assert_same_export(a: Path, b: Path) -> None:
    ea, eb = load_embeddings(a), load_embeddings(b)
    for key in ARRAYS:
        assert ea[key].dtype == eb[key].dtype and ea[key].shape == eb[key].shape, key
        np.testing.assert_array_equal(np.asarray(ea[key]), np.asarray(eb[key]), err_msg=key)
    assert ea["pin_external_ids"] == eb["pin_external_ids"]
    ma, mb = dict(ea["manifest"]), dict(eb["manifest"])
    ma.pop("world_size", None), mb.pop("world_size", None)
    assert ma == mb


def test_shard_ranges_are_contiguous_batch_aligned_and_cover_all_pins():
    for p, b, w in [(160, 32, 2), (160, 32, 8), (1000, 7, 3), (5, 10, 4), (0, 4, 2)]:
        ranges = [shard_range(p, b, r, w) for r in range(w)]
        assert ranges[0][0] == 0 and ranges[-1][1] == p
        assert all(x[1] == y[0] and x[0] <= x[1] for x, y in zip(ranges, ranges[1:]))
        assert all(s % b == 0 for s, _ in ranges)
    assert [shard_range(160, BATCH, r, 2) for r in (0, 1)] == [(0, 64), (64, 160)]
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        shard_range(10, 2, 2, 2)


def test_torchrun_two_cpu_ranks_match_a_single_process(run_and_single, tmp_path):
    run, single = run_and_single
    out = tmp_path / "emb"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "training", "embed", str(run), "--out", str(out), "--batch-size", str(BATCH), "--quiet"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "160 pins x 16" in proc.stdout and "2 ranks merged" in proc.stdout
    assert proc.stdout.count("wrote ") == 1                      # rank 0 reports, once
    assert json.loads((out / "manifest.json").read_text())["world_size"] == 2
    assert_same_export(out, single)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]  # the default shard dir is gone


@pytest.fixture
def shards(run_and_single, tmp_path):
    """Shards of an 8-rank export written in this process (5 batches: 3 ranks get no pins)."""
    run_dir, _ = run_and_single
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                     # as the single-process export
    try:
        run = dict(load_run(run_dir, device="cpu", progress=False, log=lambda *_: None), run_dir=run_dir)
        d = tmp_path / "shards"
        for r in range(8):
            start, stop = shard_range(run["graph"].num_pins, BATCH, r, 8)
            _write_shard(d, r, 8, "job1", start, stop, run, BATCH, "float32", 0, False)
    finally:
        torch.set_num_threads(threads)
    return d


def test_merge_checks_every_shard(run_and_single, shards, tmp_path):
    _, single = run_and_single
    ms = [json.loads((shards / f"shard_{r:05d}" / "manifest.json").read_text()) for r in range(8)]
    assert sum(m["start"] == m["stop"] for m in ms) == 3
    merge_shards(shards, tmp_path / "merged")                    # graph store found from the run dir
    assert_same_export(tmp_path / "merged", single)

    def broken(name, edit):
        d = tmp_path / name
        shutil.copytree(shards, d)
        edit(d)
        return d

    def flip(path):
        data = bytearray(path.read_bytes())
        data[-3] ^= 0xFF
        path.write_bytes(bytes(data))

    def set_job(path):
        m = json.loads(path.read_text())
        path.write_text(json.dumps(dict(m, job="other")))

    cases = {
        "missing": (lambda d: shutil.rmtree(d / "shard_00002"), r"missing shards of rank\(s\) \[2\] of 8"),
        "corrupt": (lambda d: flip(d / "shard_00001" / "fused.npy"), r"shard_00001/fused\.npy: CRC32 mismatch"),
        "truncated": (lambda d: (d / "shard_00003" / "text.npy").write_bytes(b"\x93NUMPY"),
                      r"shard_00003/text\.npy: 6 bytes, the shard manifest says"),
        "partial": (lambda d: (d / "shard_00004" / "manifest.json").unlink(), r"shard_00004: incomplete shard"),
        "foreign": (lambda d: set_job(d / "shard_00005" / "manifest.json"), r"shard_00005: from another export"),
        "bad_manifest": (lambda d: (d / "shard_00000" / "manifest.json").write_text("{"), r"shard_00000/manifest.json: corrupt"),
    }
    for name, (edit, pattern) in cases.items():
        with pytest.raises(EmbedShardError, match=pattern):
            merge_shards(broken(name, edit), tmp_path / f"out_{name}")
        assert not (tmp_path / f"out_{name}").exists(), name
    with pytest.raises(EmbedShardError, match="world size 8, job job1; expected 4"):
        merge_shards(shards, tmp_path / "out_ws", world_size=4)
    with pytest.raises(EmbedShardError, match="no shard directory"):
        merge_shards(tmp_path / "nowhere", tmp_path / "out_none")
