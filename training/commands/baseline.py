"""``pinclip baseline KIND --graph GRAPH_DIR --out DIR``: a baseline method directory.

Writes the embeddings of every pin of the graph store by a baseline (``training.baseline_registry``)
into DIR, which ``pinclip evaluate DIR`` scores and ``pinclip report`` compares with training
runs, as ``pinclip demo`` and ``pinclip compare`` do with theirs:

  frozen-text   a frozen pretrained text encoder on pin text (all-MiniLM-L6-v2, shipped offline;
                ``--model PATH``: another local Hugging Face text encoder)
  frozen-vlm    a frozen Qwen2-VL / Qwen3-VL (``--model PATH``, a local full checkpoint, required):
                each pin's image and text jointly (``fused``), the image alone (``image``) and
                the text alone (``text``), each the last token's hidden state after an
                instruction (the Qwen3-VL-Embedding recipe): the paper's comparison.
                ``--device`` (default auto: CUDA when present)
  graph-only    a graph-only GNN (PyG SAGEConv, PinSage-style walks on the train graph;
                ``--steps N``, ``--seed S``); cold-start pins have no train edge: unsupported
  frozen-text-pixels  the frozen text encoder's embedding with each image's raw pixels beside
                it (32 x 32 RGB, PCA-whitened to 128 dimensions), the text weight chosen on the
                store's validation edges (``fused``): what the images give with no image
                training, the bar a trained image tower has to clear (``--model PATH`` as above)

DIR: ``method.json`` (method, graph store and its identity), ``embedding_NAME.npy`` float32
[P, D], ``supported.npy`` bool [P]. DIR must be missing, empty or an earlier baseline directory
(replaced atomically); anything else is refused.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    from training.baseline_registry import BASELINES
    p = subparsers.add_parser("baseline", help="write a baseline method directory (frozen text, frozen VLM, "
                                               "graph only, frozen text + pixels)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("kind", choices=list(BASELINES), metavar="KIND",
                   help="; ".join(f"{k}: {b.help}" for k, b in BASELINES.items()))
    p.add_argument("--graph", required=True, type=Path, metavar="GRAPH_DIR", help="a graph store (pinclip build-graph)")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=None, help="the seed of a trained baseline (default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps of a trained baseline")
    p.add_argument("--model", default=None, metavar="PATH",
                   help="a local model directory, where the baseline takes one")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:N (baselines that compute on a device; "
                                                  "default auto)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graph.locks import exclusive_lock

    from training.cli import CLIError
    from training.baseline_registry import BASELINES, BaselineOptions, build_baseline
    b = BASELINES[args.kind]
    given = {name for name in ("seed", "steps", "model", "device") if getattr(args, name) is not None}
    extra = sorted(given - b.options)
    if extra:
        raise CLIError(f"baseline {args.kind} takes no {', '.join('--' + e for e in extra)} "
                       f"(it takes: {', '.join('--' + o for o in sorted(b.options)) or 'no options'})")
    if args.steps is not None and args.steps < 0:
        raise CLIError(f"--steps {args.steps}: expected 0 or more")
    if args.model is not None and not Path(args.model).expanduser().exists():
        raise CLIError(f"--model {args.model}: no such file or directory (models are loaded from a local path)")
    if not args.graph.is_dir():
        raise CLIError(f"--graph {args.graph}: no such directory")
    if args.device is not None:
        from graph.devices import check_device
        check_device(args.device, "--device", allow_auto=True)
    opt = BaselineOptions(seed=0 if args.seed is None else args.seed, steps=args.steps,
                          model=None if args.model is None else str(Path(args.model).expanduser().absolute()),
                          device=args.device or "auto", progress=not args.quiet)
    out = args.out.absolute()
    with exclusive_lock(out, "baseline directory"):
        build_baseline(args.kind, args.graph, out, opt)
    print(f"wrote {out} ({b.method}: {b.describe(opt)}); score it with `pinclip evaluate {out}`")
    return 0
