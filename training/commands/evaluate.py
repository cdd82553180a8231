"""``pinclip evaluate RUN_DIR [--json]``: retrieval, cold start and neighborhood quality of a run.

RUN_DIR is a training run (its newest checkpoint embeds every pin into RUN_DIR/embeddings first,
re-used while current) or a baseline directory written by ``pinclip demo`` (``method.json``).
Metrics (training.evaluation.run_eval): text -> image and image -> text recall@1/5/10/20/50,
board-mate recall@k and tie-aware MRR of warm test pins, the same for cold-start pins (content
only), neighbor_overlap@10 with the random-walk neighborhood, board-mate recall of each
embedding (image, text, fused), and neighborhood quality (board coherence, alignment,
uniformity; purity w.r.t. the hidden topic and style on the synthetic world; topic-level text ->
image precision t2i_topic_precision@10 there too). The result is saved as
RUN_DIR/evaluation.json, with the per-query values behind the headline metrics in
RUN_DIR/per_query.npz (for paired significance tests); ``--json`` prints it, otherwise a table,
with the chance level (random unit embeddings scored the same way; evaluation.json's ``chance``)
as a reference row.

The headline metrics come from the embedding head the run's losses train: among the trained
heads (image and text by the image-text loss, fused by a neighbor term with weight > 0), the one
with the best board-mate recall@10 on the validation edges (never the test edges); a head no
loss trains is never the headline (evaluation.json: headline_head, heads_trained, heads).

A directory whose embeddings hold NaN or infinite rows is refused, and so is one whose graph
store changed since it was made (RUN_DIR/graph_identity.json, method.json): the error names the
recorded and the current store. ``--allow-changed-graph`` evaluates anyway and records it in
evaluation.json (``graph_changed``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("evaluate", help="evaluate a training run or a baseline directory",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    p.add_argument("--json", action="store_true", help="print evaluation.json instead of a table")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (for embedding the pins)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--allow-changed-graph", action="store_true",
                   help="evaluate even when the graph store changed since the run or baseline was made (e.g. "
                        "rebuilt with another split: held-out edges may then have been training edges); "
                        "evaluation.json records it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from training.checkpoint import CheckpointError
    from training.cli import CLIError
    from training.config import TrainConfigError
    from training.evaluation.report import CHANCE_ROW, format_rows, heads_table, metrics_table
    from training.evaluation.run_eval import EvaluationError, evaluate_dir

    if not args.run_dir.is_dir():
        raise CLIError(f"{args.run_dir}: no such directory")
    log = (lambda *a, **k: print(*a, file=sys.stderr, **k))
    try:
        ev = evaluate_dir(args.run_dir, device=args.device, progress=not args.quiet, log=log,
                          allow_changed_graph=args.allow_changed_graph)
    except (EvaluationError, CheckpointError, TrainConfigError) as exc:
        raise CLIError(str(exc)) from None
    if args.json:
        print(json.dumps(ev, indent=2))
        return 0
    m = ev["metrics"]
    keys = [k for k in m if k.startswith(("t2i_recall@", "i2t_recall@", "t2i_topic_precision@", "board_",
                                           "cold_start_board_recall@", "neighbor_overlap"))
            and not k.endswith("_topic_ceiling")]
    print(f"{ev['method']} ({ev['kind']}" + (f", step {ev['step']}" if ev["step"] is not None else "") + ")"
          + (f"; headline head: {ev['headline_head']} ({ev.get('headline_head_selected_by', '')})"
             if ev.get("headline_head") else ""))
    # The chance level (random unit embeddings, same protocol) as a reference row.
    rows = {ev["method"]: m, **({CHANCE_ROW: ev["chance"]} if ev.get("chance") else {})}
    for lo in range(0, len(keys), 6):
        print(format_rows(metrics_table(rows, keys[lo:lo + 6])))
    if len(ev.get("heads") or {}) > 1:
        print(format_rows(heads_table([ev], markdown=False)))
    hood = ev.get("neighborhood", {})
    if hood:
        print(format_rows(metrics_table({ev["method"]: hood}, sorted(hood))))
    print(f"wrote {args.run_dir / 'evaluation.json'} ({ev['seconds']:.1f} s)")
    return 0
