"""The ``pinclip`` command line.

Each subcommand lives in its own small module under ``training/commands/`` and exposes
``add_parser(subparsers)``, which registers the subcommand and sets ``func`` on it. The CLI
lives in ``training/`` because it composes every layer (graph, sampling, model, trainer);
``graph/`` and ``pinclip/`` never import it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# Order is the order shown in ``pinclip --help``.
COMMAND_MODULES = [
    "synth",
    "build_graph",
    "graph_stats",
    "train",
    "embed",
    "ann_index",
    "evaluate",
    "report",
    "demo",
]


class CLIError(Exception):
    """An error meant for the user: printed without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinclip",
        description="PinCLIP toolkit: Pin-Board graph store, neighbor samplers, training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"training.commands.{name}")
        except ModuleNotFoundError as exc:
            # A subcommand whose module is not written yet is simply not offered.
            if exc.name == f"training.commands.{name}":
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (CLIError, FileNotFoundError, ValueError) as exc:
        print(f"pinclip {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pinclip {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
