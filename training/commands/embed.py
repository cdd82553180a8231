"""``pinclip embed RUN_DIR --out DIR``: image, text and fused embeddings of every pin.

``pinclip embed RUN_DIR|MODEL_DIR --dataset DATASET_DIR --out DIR`` embeds every pin of any
dataset directory (README "The dataset format", e.g. pins that arrived after training) without
building a graph store, with a run's model or a model directory written by ``pinclip export``
(a model directory needs ``--dataset``). ``cold_start.npy`` is then the dataset's ``fresh``
column; ``manifest.json`` records ``"source": "dataset"`` and the dataset. A bad image stops the
export naming the pin, or with ``--skip-bad-images`` is embedded as a pin without an image.

Loads the run's model from its newest checkpoint (or ``--checkpoint``), encodes every pin of the
run's graph in batches (eval transform, DataLoader workers, progress bar) and writes DIR
atomically: ``image.npy``, ``text.npy``, ``fused.npy`` ([P, D] float32 or float16, L2-normalized,
memory-mappable), ``pin_ids.npy`` (internal ids, row order), ``pin_external_ids.arrow`` (the
dataset's pin ids), ``image_missing.npy``, ``cold_start.npy`` and ``manifest.json``.
Read it back with ``training.embed.load_embeddings(DIR)``.

Under ``torchrun`` (any number of nodes and processes per node) every rank embeds a contiguous,
batch-aligned range of the pins on its own device and writes a shard; rank 0 checks the shards
and merges them into DIR, identical to a single-process export (``docs/DISTRIBUTED.md``)::

    torchrun --standalone --nproc-per-node 8 -m training embed RUN_DIR --out DIR

The run directory, the text cache and DIR must be on storage every node sees.

The run's graph store must be the one it trained on (RUN_DIR/graph_identity.json): a store
rebuilt since is refused, naming both; ``--allow-changed-graph`` embeds anyway and the
manifest records it.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("embed", help="embed every pin with a trained run or model directory",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR|MODEL_DIR",
                   help="training run directory, or a model directory (pinclip export; needs --dataset)")
    p.add_argument("--dataset", type=Path, default=None, metavar="DATASET_DIR",
                   help="embed every pin of this dataset directory instead of the run's graph (no graph store built)")
    p.add_argument("--skip-bad-images", action="store_true",
                   help="with --dataset: embed a pin whose image is missing or unreadable as a pin without an image")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (replaced atomically)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint record (default: the newest)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--workers", type=int, default=None,
                   help="data workers (default: the run's data.num_workers; 0 with --dataset)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--shard-dir", type=Path, default=None,
                   help="under torchrun: where each rank writes its shard (kept; default: a temporary sibling "
                        "of --out, removed after the merge)")
    p.add_argument("--allow-changed-graph", action="store_true",
                   help="embed even when the run's graph store changed since it trained (manifest.json records it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError
    from training.embed import embed_run
    from training.embed_shards import EmbedShardError

    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be >= 1")
    t0 = time.perf_counter()
    if args.dataset is not None or _is_model_dir(args.run_dir):
        return _run_dataset(args, t0)
    if args.skip_bad_images:
        raise CLIError("--skip-bad-images goes with --dataset (a run's own export follows its data.on_bad_image)")
    try:
        out = embed_run(args.run_dir, args.out, checkpoint=args.checkpoint, batch_size=args.batch_size,
                        device=args.device, dtype=args.dtype, num_workers=args.workers, progress=not args.quiet,
                        shard_dir=args.shard_dir, allow_changed_graph=args.allow_changed_graph)
    except (TrainConfigError, CheckpointError, EmbedShardError) as exc:
        raise CLIError(str(exc)) from None
    import json
    import os
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s: {manifest['num_pins']:,} pins x {manifest['dim']} "
          f"({manifest['dtype']}) image / text / fused embeddings from step {manifest['step']}"
          + (f", {manifest['world_size']} ranks merged" if "world_size" in manifest else ""))
    return 0


def _is_model_dir(path: Path) -> bool:
    from pinclip.pretrained import is_model_dir
    return is_model_dir(path)


def _run_dataset(args: argparse.Namespace, t0: float) -> int:
    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError
    from training.embed_dataset import embed_dataset

    if args.dataset is None:
        raise CLIError(f"{args.run_dir} is a model directory: pass --dataset DATASET_DIR to say which pins to embed "
                       "(a model directory has no graph of its own)")
    for flag, value in (("--shard-dir", args.shard_dir), ("--allow-changed-graph", args.allow_changed_graph)):
        if value:
            raise CLIError(f"{flag} does not go with --dataset (no graph store, one process)")
    if _is_model_dir(args.run_dir) and args.checkpoint is not None:
        raise CLIError("--checkpoint is for a training run directory; a model directory holds one model")
    try:
        out = embed_dataset(args.run_dir, args.dataset, args.out, checkpoint=args.checkpoint,
                            batch_size=args.batch_size, device=args.device, dtype=args.dtype,
                            num_workers=args.workers or 0, progress=not args.quiet,
                            skip_bad_images=args.skip_bad_images)
    except (TrainConfigError, CheckpointError) as exc:
        raise CLIError(str(exc)) from None
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s: {manifest['num_pins']:,} pins of {manifest['dataset']} "
          f"x {manifest['dim']} ({manifest['dtype']}) image / text / fused embeddings")
    return 0
