"""``pinclip embed RUN_DIR --out DIR``: image, text and fused embeddings of every pin.

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
    p = subparsers.add_parser("embed", help="embed every pin with a trained run", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="training run directory")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="output directory (replaced atomically)")
    p.add_argument("--checkpoint", type=Path, default=None, help="checkpoint record (default: the newest)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.add_argument("--workers", type=int, default=None, help="data workers (default: the run's data.num_workers)")
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
    from training.embed import EmbedShardError, embed_run

    if args.batch_size < 1:
        raise CLIError(f"--batch-size {args.batch_size}: must be >= 1")
    t0 = time.perf_counter()
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
