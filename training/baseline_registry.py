"""The baselines of the evaluation as a registry: ``pinclip baseline KIND`` and ``pinclip compare``
build their method directories from here.

  frozen-text   a frozen pretrained text encoder on pin text (all-MiniLM-L6-v2 by default)
  frozen-vlm    a frozen Qwen-VL embedding of image and text (the paper's comparison; needs a
                local Qwen2-VL / Qwen3-VL checkpoint: ``model``)
  graph-only    a graph-only GNN (PyG SAGEConv on the train graph)
  frozen-text-pixels  the frozen text encoder with the raw pixels beside it (PCA-whitened, the
                text weight chosen on validation): what the images give with no image training

Another baseline is one :func:`register_baseline` call (and a ``training.compare.register_method``
call to put it in the comparison).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from graph.errors import ToolkitError

__all__ = ["BaselineError", "BaselineOptions", "Baseline", "BASELINES", "GRAPH_STEPS", "register_baseline",
           "build_baseline"]


class BaselineError(ToolkitError, ValueError):
    """A baseline that cannot be built from what it was given (no pin features, no model path)."""


@dataclass(frozen=True)
class BaselineOptions:
    """What a baseline builder may read. ``seed``: its randomness (trained baselines);
    ``steps``: training steps (None: the baseline's default); ``model``: a local model path (None:
    the baseline's default model); ``device``: where to compute (``auto``: CUDA when present);
    ``progress``: show bars."""
    seed: int = 0
    steps: int | None = None
    model: str | None = None
    device: str = "cpu"
    progress: bool = True


@dataclass(frozen=True)
class Baseline:
    """A baseline that writes a method directory (``training.evaluation.run_eval.save_baseline``).

    kind: the ``pinclip baseline KIND`` name (``frozen-text``); method: the default method name
    (``frozen_text``); build(graph, graph_dir, out, options, method) writes ``out``;
    describe(options): the progress line; reused: the line when its directory is already there;
    seeded: its output depends on ``options.seed`` (else one directory serves every seed);
    options: the ``BaselineOptions`` fields it reads among ``seed``, ``steps``, ``model``,
    ``device``; requires: the options it cannot do without."""
    kind: str
    method: str
    build: Callable[[Any, Path, Path, BaselineOptions, str], Path]
    describe: Callable[[BaselineOptions], str]
    reused: str
    seeded: bool
    options: frozenset[str] = frozenset()
    help: str = ""
    requires: frozenset[str] = frozenset()


BASELINES: dict[str, Baseline] = {}


def register_baseline(baseline: Baseline) -> Baseline:
    """Add (or replace) a baseline kind; returns it."""
    BASELINES[baseline.kind] = baseline
    return baseline


def _pin_texts(g: Any, graph_dir: Path, what: str) -> list:
    import numpy as np
    if g.features is None:
        raise BaselineError(f"{graph_dir}: the graph store has no pin features (no text): the {what} baseline "
                            "needs pin captions (build it with `pinclip build-graph` from a dataset)")
    return g.features.pin_text(np.arange(g.num_pins))


def _frozen_text(g: Any, graph_dir: Path, opt: BaselineOptions, what: str) -> tuple[Any, dict]:
    """(float32 [P, Dt] the frozen text encoder's embedding of every pin's text, the info both
    text baselines record: model name, pins without text)."""
    from training.evaluation.baselines import MINILM, frozen_text_embeddings
    text = _pin_texts(g, graph_dir, what)
    kw = {} if opt.model is None else {"model_path": opt.model}
    emb = frozen_text_embeddings(text, progress=opt.progress, **kw)
    model = "all-MiniLM-L6-v2" if opt.model in (None, MINILM) else str(opt.model)
    return emb, {"model": model, "pins_without_text": sum(t is None or t == "" for t in text)}


def _build_frozen_text(g: Any, graph_dir: Path, out: Path, opt: BaselineOptions, method: str) -> Path:
    from training.evaluation.run_eval import save_baseline
    emb, info = _frozen_text(g, graph_dir, opt, "frozen text")
    return save_baseline(out, method, graph_dir, {"text": emb}, info=info)


def _build_frozen_vlm(g: Any, graph_dir: Path, out: Path, opt: BaselineOptions, method: str) -> Path:
    import numpy as np

    from training.distributed import resolve_device
    from training.evaluation.baselines import frozen_vlm_embeddings
    from training.evaluation.run_eval import save_baseline
    if opt.model is None:
        raise BaselineError("the frozen-VLM baseline needs a local Qwen2-VL or Qwen3-VL checkpoint: --model PATH "
                            "(pinclip baseline) or --vlm PATH (pinclip compare)")
    text = _pin_texts(g, graph_dir, "frozen VLM")
    paths = g.features.pin_image_paths(np.arange(g.num_pins))
    result = frozen_vlm_embeddings(paths, text, opt.model, device=resolve_device(opt.device), progress=opt.progress)
    return save_baseline(out, method, graph_dir, result.embeddings, info={"model": str(opt.model), **result.info})


def _build_frozen_text_pixels(g: Any, graph_dir: Path, out: Path, opt: BaselineOptions, method: str) -> Path:
    import numpy as np

    from training.evaluation.pixel_baseline import PIXEL_COMPONENTS, PIXEL_POWER, PIXEL_SIDE, late_fusion, pixel_embeddings
    from training.evaluation.run_eval import save_baseline
    text_emb, info = _frozen_text(g, graph_dir, opt, "frozen text + pixels")
    pixels, has_image = pixel_embeddings(g.features.pin_image_paths(np.arange(g.num_pins)), progress=opt.progress)
    fused = late_fusion(g, pixels, text_emb)
    return save_baseline(out, method, graph_dir, {"fused": fused.embedding},
                         info={**info, "text_weight": fused.text_weight,
                               "validation_board_recall@10": {str(a): v for a, v in fused.validation.items()},
                               "pixels": {"side": PIXEL_SIDE, "components": int(pixels.shape[1]),
                                          "power": PIXEL_POWER, "max_components": PIXEL_COMPONENTS},
                               "pins_without_image": int((~has_image).sum())})


GRAPH_STEPS = 150   # the graph-only baseline's default training steps


def _build_graph_only(g: Any, graph_dir: Path, out: Path, opt: BaselineOptions, method: str) -> Path:
    from training.evaluation.baselines import train_graph_baseline
    from training.evaluation.run_eval import save_baseline
    steps = GRAPH_STEPS if opt.steps is None else opt.steps
    gb = train_graph_baseline(g.train_graph(), steps=steps, seed=opt.seed, progress=opt.progress)
    return save_baseline(out, method, graph_dir, {"graph": gb.embeddings}, supported=gb.supported,
                         info={"steps": steps, "seed": opt.seed,
                               "final_loss": gb.losses[-1] if gb.losses else None, "seconds": gb.seconds})


register_baseline(Baseline(
    "frozen-text", "frozen_text", _build_frozen_text,
    describe=lambda o: "frozen pretrained text encoder "
                       f"({'all-MiniLM-L6-v2' if o.model is None else o.model}) on pin text",
    reused="frozen text baseline: reused", seeded=False, options=frozenset({"model"}),
    help="a frozen pretrained text encoder on pin text (default all-MiniLM-L6-v2; --model: a local "
         "Hugging Face text encoder)"))
register_baseline(Baseline(
    "frozen-vlm", "frozen_vlm", _build_frozen_vlm,
    describe=lambda o: f"frozen VLM ({o.model}): image and text jointly, last-token embedding",
    reused="frozen VLM baseline: reused", seeded=False, options=frozenset({"model", "device"}),
    requires=frozenset({"model"}),
    help="a frozen Qwen2-VL / Qwen3-VL embedding of each pin's image and text (--model: a local checkpoint, "
         "required)"))
register_baseline(Baseline(
    "frozen-text-pixels", "frozen_text_pixels", _build_frozen_text_pixels,
    describe=lambda o: "frozen text encoder "
                       f"({'all-MiniLM-L6-v2' if o.model is None else o.model}) with the raw pixels beside it",
    reused="frozen text + pixels baseline: reused", seeded=False, options=frozenset({"model"}),
    help="the frozen text encoder's embedding and the images' raw pixels (32 x 32 RGB, PCA-whitened) "
         "side by side, the text weight chosen on validation: what the images give with no image training"))
register_baseline(Baseline(
    "graph-only", "graph_only", _build_graph_only,
    describe=lambda o: f"graph-only GNN (PyG SAGEConv on the train graph, "
                       f"{GRAPH_STEPS if o.steps is None else o.steps} steps)",
    reused="graph-only baseline: reused", seeded=True, options=frozenset({"seed", "steps"}),
    help=f"a graph-only GNN (PyG SAGEConv, PinSage-style walks on the train graph; --steps, default "
         f"{GRAPH_STEPS}; cold-start pins unsupported)"))


def build_baseline(kind: str, graph_dir: str | Path, out: str | Path, options: BaselineOptions = BaselineOptions(),
                   method: str | None = None) -> Path:
    """Write the baseline ``kind`` (a :data:`BASELINES` key) of the graph store ``graph_dir`` into
    ``out``, a directory ``pinclip evaluate`` reads. ``out`` follows the output policy
    (``graph.output_dir``: missing, empty, or a baseline directory, which is replaced atomically),
    checked before any work. Returns ``out``."""
    from graph import PinBoardGraph
    from graph.output_dir import check_output_dir

    from training.evaluation.run_eval import BASELINE_OUTPUT
    if kind not in BASELINES:
        raise BaselineError(f"unknown baseline {kind!r}: expected one of {', '.join(BASELINES)}")
    b = BASELINES[kind]
    missing = sorted(o for o in b.requires if getattr(options, o) is None)
    if missing:
        raise BaselineError(f"baseline {kind} needs {', '.join('--' + o for o in missing)}")
    out = check_output_dir(out, BASELINE_OUTPUT)
    graph_dir = Path(graph_dir).absolute()
    if not (graph_dir / "manifest.json").is_file():
        raise BaselineError(f"{graph_dir}: not a graph store (no manifest.json; build one with `pinclip build-graph`)")
    g = PinBoardGraph.open(graph_dir)
    return b.build(g, graph_dir, out, options, method or b.method)
