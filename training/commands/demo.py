"""``pinclip demo --out DIR``: the main job on the embedded default, the synthetic Pin-Board world.

Steps (each skipped when its output in DIR is already complete, so a re-run or an interrupted
demo picks up where it stopped; an interrupted training run is resumed from its checkpoint):

1. synthesize the world (``DIR/world``: pins with images and captions, boards, edges, truth);
2. build the graph store with its train / val / test / cold-start split (``DIR/graph``);
3. train PinCLIP (``training/configs/demo.yaml``: image-text + neighbor alignment) -> ``DIR/runs/pinclip``;
4. train CLIP-only (``clip_only.yaml``: the same model, neighbor-alignment weight 0) -> ``DIR/runs/clip_only``;
5. the frozen pretrained text encoder (all-MiniLM-L6-v2) on pin text -> ``DIR/runs/frozen_text``;
6. the graph-only GNN (PyG SAGEConv, PinSage-style walks on the train graph) -> ``DIR/runs/graph_only``;
7. evaluate all four on the same splits; write ``DIR/report.md``, ``DIR/metrics.json`` and the
   plots, and print the comparison table and the bar checks.

Every training and embedding step shows a progress bar. ``--max-steps`` shortens both training
runs (the bar is only meaningful at the default).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

DEFAULT_PINS = 3000
DEFAULT_BOARDS = 300
METHODS = ("pinclip", "clip_only", "frozen_text", "graph_only")
DEMO_FORMAT = "pinclip-demo"


def _demo_output():
    from graph.output_dir import OutputKind
    return OutputKind("a demo directory", "pinclip demo", "demo.json", "format", DEMO_FORMAT)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="run the end-to-end demo on the synthetic world",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--pins", type=int, default=DEFAULT_PINS)
    p.add_argument("--boards", type=int, default=DEFAULT_BOARDS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--max-steps", type=int, default=None, help="training steps of each run (default: the config's)")
    p.add_argument("--graph-steps", type=int, default=150, help="training steps of the graph-only baseline")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for both runs (repeatable), e.g. --set train.batch_size=32")
    p.set_defaults(func=run)


def _params(args: argparse.Namespace) -> dict:
    return {"pins": args.pins, "boards": args.boards, "seed": args.seed, "image_size": args.image_size,
            "max_steps": args.max_steps, "graph_steps": args.graph_steps, "overrides": list(args.overrides)}


def _check_out(out: Path, params: dict) -> None:
    """``out`` must be new, empty or a demo made with the same parameters (continued, never replaced)."""
    from graph.output_dir import check_output_dir

    from training.cli import CLIError
    f = out / "demo.json"
    if f.is_file():
        old = json.loads(f.read_text())
        if isinstance(old, dict) and "format" not in old and "pins" in old:
            old["format"] = DEMO_FORMAT  # a demo directory written before demo.json named its format
            f.write_text(json.dumps(old, indent=2) + "\n")
    check_output_dir(out, _demo_output())
    if f.is_file():
        old = {k: v for k, v in json.loads(f.read_text()).items() if k != "format"}
        if old != params:
            diff = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            raise CLIError(f"{out} holds a demo made with other parameters {diff} (old, new): "
                           "pick another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"format": DEMO_FORMAT, **params}, indent=2) + "\n")


def _train(name: str, config: str, run_dir: Path, graph_dir: Path, cache_dir: Path, max_steps: int | None,
           device: str, extra: list[str]) -> None:
    from training.cli import CLIError
    from training.trainer import train_or_resume

    overrides = [f"data.graph={graph_dir}", f"data.cache_dir={cache_dir}", f"train.device={device}"]
    if max_steps is not None:
        overrides.append(f"train.max_steps={max_steps}")
    summary = train_or_resume(config, run_dir, overrides + extra, log=lambda msg: print(f"      {msg}"))
    if not summary:
        raise CLIError(f"training {name} did not finish (see {run_dir / 'train.log'})")


def run(args: argparse.Namespace) -> int:
    from graph.devices import check_device
    from graph.locks import exclusive_lock

    from training.cli import CLIError
    for item in args.overrides:
        if "=" not in item:
            raise CLIError(f"--set {item!r}: expected KEY=VALUE (e.g. train.batch_size=32)")
    check_device(args.device, "--device", allow_auto=True)
    out: Path = args.out.absolute()
    with exclusive_lock(out, "demo directory"):  # one demo writer at a time
        _check_out(out, _params(args))
        return _run_demo(args, out)


def _run_demo(args: argparse.Namespace, out: Path) -> int:
    from graph import PinBoardGraph
    from graph.dataset import build_graph_from_dataset
    from graph.stats import format_stats, graph_stats
    from graph.synth import synthesize

    from training.cli import CLIError
    world, graph_dir, runs, cache = out / "world", out / "graph", out / "runs", out / "cache"
    t0 = time.perf_counter()
    step_times: dict[str, float] = {}

    def stage(i: int, text: str) -> float:
        print(f"[{i}/7] {text}  ({time.perf_counter() - t0:.0f} s)", flush=True)
        return time.perf_counter()

    s = stage(1, f"synthesizing the Pin-Board world ({args.pins} pins, {args.boards} boards, seed {args.seed})")
    if not (world / "synth.json").is_file():
        synthesize(world, num_pins=args.pins, num_boards=args.boards, seed=args.seed, image_size=args.image_size)
    step_times["synth"] = time.perf_counter() - s
    s = stage(2, f"building the graph store -> {graph_dir}")
    if (graph_dir / "manifest.json").is_file():
        g = PinBoardGraph.open(graph_dir)
    else:
        g = build_graph_from_dataset(world, graph_dir, seed=args.seed)
    stats = graph_stats(g)
    (out / "graph_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(format_stats(stats))
    step_times["graph"] = time.perf_counter() - s

    s = stage(3, "training PinCLIP (image-text + neighbor alignment)")
    _train("pinclip", "demo", runs / "pinclip", graph_dir, cache, args.max_steps, args.device,
           args.overrides)
    step_times["train_pinclip"] = time.perf_counter() - s
    s = stage(4, "training CLIP-only (neighbor-alignment weight 0)")
    _train("clip_only", "clip_only", runs / "clip_only", graph_dir, cache, args.max_steps, args.device,
           args.overrides)
    step_times["train_clip_only"] = time.perf_counter() - s

    from training.evaluation.run_eval import save_baseline
    if not (runs / "frozen_text" / "method.json").is_file():
        s = stage(5, "frozen pretrained text encoder (all-MiniLM-L6-v2) on pin text")
        from training.evaluation.baselines import frozen_text_embeddings
        import numpy as np
        text = g.features.pin_text(np.arange(g.num_pins))
        emb = frozen_text_embeddings(text)
        save_baseline(runs / "frozen_text", "frozen_text", graph_dir, {"text": emb},
                      info={"model": "all-MiniLM-L6-v2", "pins_without_text": sum(t is None or t == "" for t in text)})
        step_times["frozen_text"] = time.perf_counter() - s
    else:
        stage(5, "frozen text baseline: reused")
    if not (runs / "graph_only" / "method.json").is_file():
        s = stage(6, f"graph-only GNN (PyG SAGEConv on the train graph, {args.graph_steps} steps)")
        from training.evaluation.baselines import train_graph_baseline
        gb = train_graph_baseline(g.train_graph(), steps=args.graph_steps, seed=args.seed, progress=True)
        save_baseline(runs / "graph_only", "graph_only", graph_dir, {"graph": gb.embeddings}, supported=gb.supported,
                      info={"steps": args.graph_steps, "final_loss": gb.losses[-1] if gb.losses else None,
                            "seconds": gb.seconds})
        step_times["graph_only"] = time.perf_counter() - s
    else:
        stage(6, "graph-only baseline: reused")

    s = stage(7, "evaluating every method on the same splits; writing the report")
    from training.evaluation.report import format_checks, format_rows, metrics_table, write_report
    rep = write_report([runs / m for m in METHODS], out, device=args.device,
                       title="PinCLIP demo on the synthetic Pin-Board world",
                       extra_md=f"World: {args.pins:,} pins, {args.boards:,} boards, seed {args.seed} "
                                f"(`pinclip synth`); training runs in `runs/`.")
    step_times["evaluate_report"] = time.perf_counter() - s
    total = time.perf_counter() - t0
    (out / "timings.json").write_text(json.dumps({**step_times, "total": total}, indent=2) + "\n")
    print()
    print(format_rows(metrics_table(rep["metrics"])))
    print()
    if rep["checks"]:
        print(format_checks(rep["checks"]))
    print(f"\ndemo finished in {total / 60:.1f} min; report: {out / 'report.md'}, metrics: {out / 'metrics.json'}")
    return 0
