"""``pinclip train``: train PinCLIP jointly on image-text pairs and sampled graph neighbors.

    pinclip train --config FILE --out RUN_DIR [key=value ...]
    pinclip train --resume RUN_DIR [key=value ...]

FILE is a YAML training config (shipped: training/configs/demo.yaml, clip_only.yaml,
gpu_hf_clip.yaml, gpu_hf_siglip.yaml, gpu_qwen2vl.yaml, vlm_joint.yaml; a shipped name such as
``demo`` works too); ``key=value`` overrides any key
(``data.dataset=DIR train.max_steps=40 model.overrides.vision.layers=2``). The resolved config is
saved as RUN_DIR/config.yaml. RUN_DIR/metrics.jsonl gets one line per logging step
({"step", "loss", loss terms, "lr", "samples_per_s", "data_wait_share", ...});
checkpoints go to RUN_DIR/checkpoints/. ``--resume`` continues a run (killed or finished: raise
``train.max_steps``) from its newest checkpoint, exactly where it stopped.

RUN_DIR is created only once every start-up check passed (config, data, model, batch size,
checkpoint), so a failed start leaves nothing behind and the corrected command works on the same
--out. A running training holds RUN_DIR's lock (a sibling .RUN_DIR.lock file): a second
``pinclip train`` on it exits with status 2 naming the first one's process id. Training stops
with an error when a step makes any parameter NaN or infinite (optim.lr too large...), before
those weights are checkpointed.

Data parallel: ``torchrun --standalone --nproc_per_node N -m training train ...``
(gloo on CPU, NCCL on CUDA).
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a PinCLIP model (or resume a run)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", metavar="FILE", help="training config YAML (or a shipped config name)")
    what.add_argument("--resume", type=Path, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("--out", type=Path, metavar="RUN_DIR", help="run directory (new or empty; with --config)")
    p.add_argument("--checkpoint", type=Path, default=None,
                   help="with --resume: the checkpoint record (checkpoints/step_N.json) to resume from "
                        "(default: the newest)")
    p.add_argument("--quiet", action="store_true",
                   help="no progress bars (train.progress=false; no Hugging Face loading bars either)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError, load_train_config
    from training.trainer import RunDirError, Trainer, TrainingError

    for item in args.overrides:
        if "=" not in item:
            raise CLIError(f"unexpected argument {item!r}: overrides are key=value (e.g. train.max_steps=40)")
    if args.quiet:
        args.overrides = [*args.overrides, "train.progress=false"]
    trainer, summary = None, None
    try:
        if args.resume is not None:
            if args.out is not None and Path(args.out).absolute() != Path(args.resume).absolute():
                raise CLIError("--out is not used with --resume (the run stays in RUN_DIR)")
            trainer = Trainer(None, args.resume, resume=True, overrides=args.overrides, checkpoint=args.checkpoint)
        else:
            if args.out is None:
                raise CLIError("--config needs --out RUN_DIR")
            if args.checkpoint is not None:
                raise CLIError("--checkpoint goes with --resume")
            cfg = load_train_config(args.config, args.overrides)
            trainer = Trainer(cfg, args.out)
        summary = trainer.train()
    except (TrainConfigError, CheckpointError, RunDirError, TrainingError) as exc:
        raise CLIError(str(exc)) from None
    finally:
        if trainer is not None:
            from training.distributed import shutdown
            trainer.close()        # the run directory's lock (train() releases it too)
            shutdown(trainer.dist, synchronize=summary is not None)
    return 0 if summary else 1
