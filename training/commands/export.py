"""``pinclip export RUN_DIR --out MODEL_DIR``: a run's model as a self-contained model directory.

Loads the model of the run's newest checkpoint (or ``--checkpoint``) and writes MODEL_DIR
atomically: ``model.safetensors`` (every weight), ``config.json``, ``preprocess.json`` (the eval
image transform and the tokenizer), ``tokenizer/`` when needed, ``README.md`` (a model card: data,
training config, step, evaluation metrics) and ``manifest.json`` (the sha256 of every file).
MODEL_DIR may be missing, empty or a previous export (replaced); anything else is refused.

Use it without the run or the toolkit's training code::

    import pinclip
    enc = pinclip.load("MODEL_DIR")
    emb = enc.encode_pins(images=["pin.jpg"], texts=["a caption"])   # float32 [N, D]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a run's model as a self-contained model directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run directory")
    p.add_argument("--out", required=True, type=Path, metavar="MODEL_DIR",
                   help="output model directory (replaced atomically)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint record (default: the newest)")
    p.add_argument("--device", default="cpu", help="where the model is loaded to export it (cpu, cuda, cuda:N)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (no Hugging Face loading bars)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError
    from training.distributed import resolve_device
    from training.export import export_run

    t0 = time.perf_counter()
    try:
        out = export_run(args.run_dir, args.out, checkpoint=args.checkpoint, device=str(resolve_device(args.device)))
    except (TrainConfigError, CheckpointError) as exc:
        raise CLIError(str(exc)) from None
    manifest = json.loads((out / "manifest.json").read_text())
    size = sum(rec["bytes"] for rec in manifest["files"].values())
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s: model {manifest['model']} from step {manifest['step']}, "
          f"{manifest['embed_dim']}-d embeddings, {len(manifest['files'])} files ({size / 1e6:.1f} MB); "
          f"load it with pinclip.load({str(out)!r})")
    return 0
