"""`pinclip train` / `pinclip embed` as subprocesses: a run killed with SIGKILL between
checkpoints and resumed logs exactly the losses of an uninterrupted run; config errors; embed."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

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


# `pinclip train` that stops inside step N + 1 (after step N's metrics line, before anything of
# step N + 1 is written), through a Trainer callback, and writes a marker file so the test can
# SIGKILL it from outside: a run dying between checkpoints, with no cleanup.
_PAUSE_AFTER = """
import sys, time
from pathlib import Path
from training import trainer
from training.cli import main

after, marker = int(sys.argv[1]), Path(sys.argv[2])
init = trainer.Trainer.__init__

def pause(step, terms):
    if step == after + 1:
        marker.write_text(str(after))
        while True:
            time.sleep(60)

def patched(self, *args, **kwargs):
    init(self, *args, **kwargs)
    self.callbacks.append(pause)

trainer.Trainer.__init__ = patched
sys.exit(main(sys.argv[3:]))
"""


def pinclip_killed_after(step, args, env, marker, timeout=120):
    """`pinclip ARGS`, SIGKILLed from outside once it finished ``step`` (see ``_PAUSE_AFTER``);
    the completed process (returncode, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE_AFTER, str(step), str(marker), *map(str, args)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + timeout
    try:
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


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
        proc = pinclip_killed_after(6, ["train", "--config", config_file, "--out", run,   # checkpoint at 4 only
                                        f"data.num_workers={workers}"], cli_env, tmp_path / f"marker{workers}")
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


def _png_declaring(width, height):
    """A ~60-byte PNG whose header declares width x height pixels and holds none."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_build_graph_check_images_reports_every_bad_image_together(tmp_path, capsys):
    import os

    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from pinclip.transforms import DEFAULT_MAX_IMAGE_PIXELS
    from training.cli import build_parser, main
    from training.commands.build_graph import DEFAULT_MAX_IMAGE_PIXELS as CLI_DEFAULT

    assert CLI_DEFAULT == DEFAULT_MAX_IMAGE_PIXELS
    assert build_parser().parse_args(["build-graph", "d", "--out", "g"]).max_image_pixels == DEFAULT_MAX_IMAGE_PIXELS
    d = tmp_path / "data"
    (d / "img").mkdir(parents=True)
    n = 50
    for i in range(0, n, 2):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(d / "img" / f"{i}.png")     # even pins: fine
    (d / "img" / "1.png").write_bytes(_png_declaring(20000, 20000))        # too large
    (d / "img" / "3.png").write_text("not a png")                           # unreadable
    os.mkfifo(d / "img" / "5.png")                                           # not a regular file
    (d / "img" / "7.png").mkdir()                                            # not a regular file
    # 9, 11, ..., 49 do not exist: 21 missing
    images = [f"img/{i}.png" for i in range(n)]
    images[48] = None                                                        # no image: fine
    pq.write_table(pa.table({"pin_id": [f"p{i}" for i in range(n)], "text": ["t"] * n, "image": images}),
                   d / "pins.parquet")
    pq.write_table(pa.table({"board_id": [0], "name": ["b"]}), d / "boards.parquet")
    pq.write_table(pa.table({"pin_id": [f"p{i}" for i in range(n)], "board_id": [0] * n}), d / "edges.parquet")

    assert main(["build-graph", str(d), "--out", str(tmp_path / "g"), "--quiet", "--check-images"]) == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    head, *lines = err.strip().splitlines()
    assert head.startswith(f"pinclip build-graph: error: {d / 'pins.parquet'}, column 'image': 25 of 49 images are bad "
                           "(21 missing, 2 not a regular file, 1 unreadable, 1 too large; --max-image-pixels 50,000,000):")
    assert lines[0].startswith("  row 1, pin_id 'p1': img/1.png: declares 400,000,000 pixels")
    assert lines[1] == "  row 3, pin_id 'p3': img/3.png: not an image (no format Pillow reads matches its first bytes)"
    assert lines[2] == "  row 5, pin_id 'p5': img/5.png: a FIFO (named pipe), not an image file"
    assert lines[3] == "  row 7, pin_id 'p7': img/7.png: a directory, not an image file"
    assert lines[4] == "  row 9, pin_id 'p9': img/9.png: no such file"
    assert len(lines) == 22 and lines[20] == "  ... and 5 more" and "on_bad_image=skip" in lines[-1]
    # the cap is the flag's: 4 x 4 = 16 pixels are too many for --max-image-pixels 10
    assert main(["build-graph", str(d), "--out", str(tmp_path / "g"), "--quiet", "--check-images",
                 "--max-image-pixels", "10"]) == 2
    assert "49 of 49 images are bad" in capsys.readouterr().err
    # without the flag images are not opened: the store builds
    assert main(["build-graph", str(d), "--out", str(tmp_path / "g"), "--quiet"]) == 0
    # fixed: the check passes and the store is built
    for i in range(1, n, 2):
        p = d / "img" / f"{i}.png"
        if p.is_dir():
            p.rmdir()
        elif p.exists() or p.is_symlink():
            p.unlink()
        Image.new("RGB", (4, 4)).save(p)
    capsys.readouterr()
    assert main(["build-graph", str(d), "--out", str(tmp_path / "g"), "--quiet", "--check-images"]) == 0
    assert "checked 49 images" in capsys.readouterr().out
