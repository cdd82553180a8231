"""``pinclip report RUN_DIR [RUN_DIR ...] --out DIR``: compare methods in report.md and plots.

Each RUN_DIR (a training run or a baseline directory) is evaluated first unless its
evaluation.json is current. DIR gets report.md (comparison table, the demo bar when pinclip,
clip_only and frozen_text are among the methods, recall by embedding, neighborhood quality),
metrics.json ({method: metrics}, DESIGN.md keys), report.json (the sources) and PNG plots (recall@k curves, cold-start
against warm bars, 2-D PCA maps colored by topic or board, similarity histograms). A method is
named after its directory (or its method.json). DIR is written atomically: it must be new,
empty or an earlier report (replaced whole); anything else is refused. A directory whose graph
store changed since it was made is refused unless ``--allow-changed-graph``. Methods evaluated on
different graph stores (evaluation.json's graph manifest sha256) are refused, naming each one's
store, unless ``--allow-mixed-graphs``; report.md's header names every method's store. The tables
carry the chance level (random unit embeddings scored the same way) as a reference row, and
training_loss.png plots each training run's loss from RUN_DIR/metrics.jsonl.

Each method's headline numbers come from the embedding head its losses train (the trained head
with the best validation board recall; never an untrained one, e.g. the CLIP-only fusion);
report.md shows every head side by side. ``--significance FILE`` (a significance.json of
``pinclip compare``) adds its confidence intervals, and the bar's gain checks then pass only when
the paired interval of the difference lies above 0.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("report", help="write report.md and plots comparing runs", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", required=True, type=Path, metavar="DIR")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (for embedding the pins)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--allow-changed-graph", action="store_true",
                   help="evaluate even when the graph store changed since the run or baseline was made (e.g. "
                        "rebuilt with another split: held-out edges may then have been training edges); "
                        "evaluation.json records it")
    p.add_argument("--significance", type=Path, metavar="FILE",
                   help="a significance.json (pinclip compare): report.md shows its confidence intervals and "
                        "the bar's gain checks pass only when the paired interval lies above 0")
    p.add_argument("--allow-mixed-graphs", action="store_true",
                   help="report methods evaluated on different graph stores side by side (their scores are not "
                        "comparable; report.md says so and names each store)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError
    from training.evaluation.report import format_checks, format_rows, metrics_table, write_report_directory
    from training.evaluation.run_eval import EvaluationError, allowing_changed_graph
    from training.evaluation.summary import HEADLINE_KEYS

    for d in args.run_dirs:
        if not d.is_dir():
            raise CLIError(f"{d}: no such directory")
    if args.significance is not None and not (args.significance.is_file()
                                              or (args.significance / "significance.json").is_file()):
        raise CLIError(f"--significance {args.significance}: no such file (nor DIR/significance.json)")
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k))
    try:
        # write_report opens each directory itself: the flag reaches its load_method this way.
        with allowing_changed_graph(args.allow_changed_graph):
            rep = write_report_directory(args.run_dirs, args.out, device=args.device, progress=not args.quiet,
                                         log=log, allow_mixed_graphs=args.allow_mixed_graphs,
                                         significance=args.significance)
    except (EvaluationError, CheckpointError, TrainConfigError) as exc:
        raise CLIError(str(exc)) from None
    keys = [k for k in HEADLINE_KEYS if any(k in m for m in rep["metrics"].values())]
    print(format_rows(metrics_table({**rep["metrics"], **rep["chance"]}, keys)))
    if rep["checks"]:
        print(format_checks(rep["checks"]))
    print(f"wrote {args.out / 'report.md'} and {len(rep['files']) - 1} other files")
    return 0
