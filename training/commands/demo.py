"""``pinclip demo --out DIR``: the main job on the embedded default, the synthetic Pin-Board world.

The demo is ``pinclip compare`` (``training.compare``) on a freshly synthesized world. Steps (each
skipped when its output in DIR is already complete, so a re-run or an interrupted demo picks up
where it stopped; an interrupted training run is resumed from its checkpoint):

1. synthesize the world (``DIR/world``: pins with images and captions, boards, edges, truth);
2. build the graph store with its train / val / test / cold-start split (``DIR/graph``);
3. train PinCLIP (``training/configs/demo.yaml``: image-text + neighbor alignment) -> ``DIR/runs/pinclip``;
4. train CLIP-only (``clip_only.yaml``: the same model, neighbor-alignment weight 0) -> ``DIR/runs/clip_only``;
5. the frozen pretrained text encoder (all-MiniLM-L6-v2) on pin text -> ``DIR/runs/frozen_text``,
   and the same with the images' raw pixels beside it (PCA-whitened, the text weight chosen on
   validation: what the images give with no image training) -> ``DIR/runs/frozen_text_pixels``;
6. the graph-only GNN (PyG SAGEConv, PinSage-style walks on the train graph) -> ``DIR/runs/graph_only``;
7. evaluate all five on the same splits; write ``DIR/report.md``, ``DIR/metrics.json``,
   ``DIR/significance.json`` (paired bootstrap intervals against PinCLIP) and the plots, and
   print the comparison table and the bar checks.

Every training and embedding step shows a progress bar. ``--max-steps`` shortens both training
runs (the bar is only meaningful at the default). ``--seeds N`` trains each trained method N
times (``runs/NAME-seed1``, ...; metrics.json then holds the mean over seeds). A DIR made with
other parameters is refused (DIR/demo.json records them); DIR is never replaced.
"""
from __future__ import annotations

import argparse
from pathlib import Path

DEFAULT_PINS = 3000
DEFAULT_BOARDS = 300
DEMO_FORMAT = "pinclip-demo"
# Values of parameters that demo.json files written before the parameter existed imply.
LEGACY_PARAMS = {"seeds": 1}


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
    p.add_argument("--seeds", type=int, default=1, help="training seeds of each trained method (default 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="training config override for both runs (repeatable), e.g. --set train.batch_size=32")
    p.set_defaults(func=run)


def _params(args: argparse.Namespace) -> dict:
    return {"pins": args.pins, "boards": args.boards, "seed": args.seed, "image_size": args.image_size,
            "max_steps": args.max_steps, "graph_steps": args.graph_steps, "overrides": list(args.overrides),
            "seeds": args.seeds}


def _check_out(out: Path, params: dict) -> None:
    """``out`` must be new, empty or a demo made with the same parameters (continued, never replaced)."""
    import json

    from training.compare import check_params
    f = out / "demo.json"
    if f.is_file():
        old = json.loads(f.read_text())
        if isinstance(old, dict) and "format" not in old and "pins" in old:
            old["format"] = DEMO_FORMAT  # a demo directory written before demo.json named its format
            f.write_text(json.dumps(old, indent=2) + "\n")
    check_params(out, "demo.json", DEMO_FORMAT, params, _demo_output(), "a demo", legacy=LEGACY_PARAMS)


def run(args: argparse.Namespace) -> int:
    from graph.locks import exclusive_lock

    from training.compare import CompareSettings
    settings = CompareSettings(seeds=args.seeds, overrides=tuple(args.overrides), max_steps=args.max_steps,
                               graph_steps=args.graph_steps, device=args.device, seed=args.seed)
    settings.check()          # a bad --set, --seeds or --device: refused before any work
    out: Path = args.out.absolute()
    with exclusive_lock(out, "demo directory"):  # one demo writer at a time
        _check_out(out, _params(args))
        return _run_demo(args, settings, out)


def _run_demo(args: argparse.Namespace, settings, out: Path) -> int:
    from graph.synth import synthesize

    from training.compare import Stages, compare_into, num_stages, print_summary, write_timings
    world = out / "world"
    stages = Stages(1 + num_stages(settings))
    s = stages.start(f"synthesizing the Pin-Board world ({args.pins} pins, {args.boards} boards, seed {args.seed})")
    if not (world / "synth.json").is_file():
        synthesize(world, num_pins=args.pins, num_boards=args.boards, seed=args.seed, image_size=args.image_size)
    stages.done("synth", s)
    seeds_md = "" if args.seeds == 1 else f" {args.seeds} training seeds per trained method."
    rep = compare_into(world, out, settings, stages, title="PinCLIP demo on the synthetic Pin-Board world",
                       extra_md=f"World: {args.pins:,} pins, {args.boards:,} boards, seed {args.seed} "
                                f"(`pinclip synth`); training runs in `runs/`.{seeds_md}")
    rep["timings"] = write_timings(out, stages.times, stages.t0)
    print_summary(rep, out, "demo")
    return 0
