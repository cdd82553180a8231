"""``pinclip config``: training configs, resolved and documented.

    pinclip config show NAME|FILE [key=value ...] [--model]
    pinclip config list
    pinclip config docs [--out docs/CONFIG.md] [--check]

``show`` prints the resolved training config as YAML: a shipped config name (``demo``) or a YAML
file, with its ``base:`` chain merged and the overrides applied, validated as ``pinclip train``
validates it (devices are checked for syntax only). ``--model`` prints the resolved model config
(``model.name`` + ``model.overrides`` + the ``loss`` section) as JSON instead. ``list`` names the
shipped configs (training/configs/). ``docs`` writes the key reference (every key with its type,
default and meaning, generated from the schema in training/config.py) to docs/CONFIG.md, or with
``--check`` exits with status 1 when that file is not current.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_DOCS = Path(__file__).resolve().parents[2] / "docs" / "CONFIG.md"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("config", help="show a resolved training config, list the shipped ones, "
                                             "write the key reference", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    show = sub.add_parser("show", help="print the resolved training config as YAML")
    show.add_argument("config", metavar="NAME|FILE", help="a shipped config name (demo) or a YAML file")
    show.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    show.add_argument("--model", action="store_true",
                      help="print the resolved model config (JSON) instead of the training config")
    sub.add_parser("list", help="list the shipped training configs")
    docs = sub.add_parser("docs", help="write the training config key reference (docs/CONFIG.md)")
    docs.add_argument("--out", type=Path, default=DEFAULT_DOCS, help=f"where to write it (default: {DEFAULT_DOCS})")
    docs.add_argument("--check", action="store_true", help="only check that the file is current (exit 1 if not)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from graph.atomic import atomic_write_bytes
    from pinclip.config import dumps
    from training.config import (CONFIG_DIR, config_reference_markdown, list_train_configs, load_train_config,
                                 resolve_model_config)

    if args.action == "list":
        for name in list_train_configs():
            print(f"{name:<16} {CONFIG_DIR / (name + '.yaml')}")
        return 0
    if args.action == "docs":
        text = config_reference_markdown()
        if args.check:
            current = args.out.read_text() if args.out.is_file() else None
            if current != text:
                print(f"{args.out} is not current: run `pinclip config docs`")
                return 1
            print(f"{args.out} is current")
            return 0
        atomic_write_bytes(args.out, text.encode())
        print(f"wrote {args.out}")
        return 0
    cfg = load_train_config(args.config, args.overrides, check_devices=False)
    if args.model:
        print(dumps(resolve_model_config(cfg)))
    else:
        print(OmegaConf.to_yaml(cfg, resolve=True), end="")
    return 0
