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

from graph.errors import ToolkitError, user_message

# Order is the order shown in ``pinclip --help``.
COMMAND_MODULES = [
    "synth",
    "datasets",
    "build_graph",
    "graph_stats",
    "train",
    "config",
    "embed",
    "export",
    "ann_index",
    "search",
    "neighbors",
    "evaluate",
    "baseline",
    "report",
    "compare",
    "demo",
]


class CLIError(ToolkitError):
    """An error meant for the user: printed without a traceback, exit code 2."""


def user_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions the CLI prints as one line with exit status 2: the toolkit's own
    user-facing errors (``graph.errors.ToolkitError`` and the model library's config error,
    which cannot derive from it: ``pinclip/`` imports nothing of ``graph/``). Every other
    exception is a bug and keeps its traceback."""
    from pinclip.config import ConfigError
    return ToolkitError, ConfigError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pinclip",
        description="PinCLIP toolkit: Pin-Board graph store, neighbor samplers, training, evaluation.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        # A command module that fails to import is a bug: fail loudly, never drop the command.
        importlib.import_module(f"training.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "quiet", False):   # every command's --quiet also silences third-party bars
        from training.logging_utils import quiet_third_party
        quiet_third_party()
    try:
        result = args.func(args)
    except user_error_types() as exc:
        print(f"pinclip {args.command}: error: {user_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"pinclip {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
