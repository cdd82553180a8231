"""Compare PinCLIP with its baselines on any dataset directory (``pinclip compare``).

``run_compare(dataset_dir, out)`` runs the whole comparison of ``pinclip demo`` on a dataset in
the standard format (DESIGN.md; ``pinclip synth`` writes one, ``pinclip demo`` is this on the
synthetic world). Into ``out``:

1. the graph store with its train / val / test / cold-start split (``out/graph``,
   ``graph.dataset.build_graph_from_dataset``; ``cold_start_fraction`` None: the pins' ``fresh``
   column), its statistics in ``out/graph_stats.json``;
2. one directory per method and training seed under ``out/runs``: ``runs/NAME`` for seed 0,
   ``runs/NAME-seed1``, ... for the others. The methods (:data:`METHODS`, in this order):

   * ``pinclip``: ``training/configs/demo.yaml`` (image-text + neighbor alignment);
   * ``clip_only``: ``clip_only.yaml`` (the same model, neighbor-alignment weight 0);
   * ``frozen_text``: the frozen all-MiniLM-L6-v2 on pin text (deterministic: one directory);
   * ``frozen_text_pixels``: that embedding with the images' raw pixels beside it (PCA-whitened,
     the text weight chosen on validation; ``training.evaluation.pixel_baseline``): what the
     images give with no image training, the bar a trained image tower has to clear;
   * ``graph_only``: the PyG SAGEConv GNN on the train graph (``graph_steps`` steps);
   * ``frozen_vlm`` (only with ``vlm``, a local Qwen2-VL / Qwen3-VL checkpoint): the frozen VLM's
     joint embedding of image and text (``training.baseline_registry``), the paper's comparison;

3. every directory evaluated on the same splits (``evaluation.json``, per-query scores), then
   ``out/report.md`` with the plots, ``out/metrics.json`` (``{method: {metric: value}}``; with
   several seeds the mean over seeds), ``out/significance.json`` (bootstrap intervals and paired
   differences against ``pinclip``, ``training.evaluation.significance``) and
   ``out/timings.json`` (seconds per step).

Every step whose output is complete is reused, so a re-run costs only the evaluation and an
interrupted training run resumes from its checkpoint. ``out/compare.json`` records the
parameters: a directory made with other parameters is refused with the difference, and ``out``
is never replaced (``graph.output_dir``).

**Seeds.** With ``seeds=N`` every method that trains is trained N times: replicate ``i`` (``i``
>= 1) adds ``i`` to the config's ``train.seed`` (model initialization) and ``sampler.seed``
(batches and pairs), and the graph-only baseline is trained with ``seed + i``. Replicate 0 is
exactly the single-seed run. Splits are the same for every seed (``seed`` seeds the split).

**Methods are a registry.** A method is a training config (trained with
``training.trainer.train_or_resume``) or a baseline builder of :data:`BASELINES`
(``training.baseline_registry``, which ``pinclip baseline KIND`` runs too): another baseline is
one :func:`register_baseline` and one :func:`register_method` call.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from graph.output_dir import OutputKind
from training.baseline_registry import (BASELINES, GRAPH_STEPS, Baseline, BaselineError, BaselineOptions,
                                        build_baseline, register_baseline)

__all__ = ["COMPARE_FORMAT", "COMPARE_OUTPUT", "CompareError", "CompareSettings", "Baseline", "BaselineOptions",
           "BASELINES", "Method", "METHODS", "DEFAULT_METHODS", "register_baseline", "register_method",
           "build_baseline", "run_compare", "compare_into", "method_dirs", "mean_metrics", "Stages"]

COMPARE_FORMAT = "pinclip-compare"
COMPARE_OUTPUT = OutputKind("a comparison directory", "pinclip compare", "compare.json", "format", COMPARE_FORMAT)
REFERENCE = "pinclip"           # the method significance.json compares every other method against


class CompareError(BaselineError):
    """Bad comparison parameters, or an output directory made with other parameters."""


# ------------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class Method:
    """A method of the comparison: a training config (``config``, a path or shipped name), or a
    :data:`BASELINES` kind (``baseline``). ``title``: the progress line (trained methods);
    ``timing``: its key in timings.json (default ``train_NAME`` or ``NAME``)."""
    name: str
    config: str | None = None
    baseline: str | None = None
    title: str = ""
    timing: str = ""

    def __post_init__(self):
        if (self.config is None) == (self.baseline is None):
            raise ValueError(f"method {self.name!r}: give exactly one of config= and baseline=")

    @property
    def seeded(self) -> bool:
        """True when each training seed gets its own directory."""
        return self.config is not None or BASELINES[self.baseline].seeded

    def timing_key(self, replicate: int) -> str:
        key = self.timing or (f"train_{self.name}" if self.config is not None else self.name)
        return key if replicate == 0 else f"{key}-seed{replicate}"


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    """Add (or replace) a method of :func:`run_compare`; returns it."""
    if method.baseline is not None and method.baseline not in BASELINES:
        raise ValueError(f"method {method.name!r}: unknown baseline {method.baseline!r}")
    METHODS[method.name] = method
    return method


register_method(Method("pinclip", config="demo", title="training PinCLIP (image-text + neighbor alignment)"))
register_method(Method("clip_only", config="clip_only", title="training CLIP-only (neighbor-alignment weight 0)"))
register_method(Method("frozen_text", baseline="frozen-text"))
register_method(Method("frozen_text_pixels", baseline="frozen-text-pixels"))
register_method(Method("graph_only", baseline="graph-only"))
# In the comparison when it is given a VLM checkpoint (``vlm``): the paper's "+20% over Qwen".
register_method(Method("frozen_vlm", baseline="frozen-vlm"))
DEFAULT_METHODS = ("pinclip", "clip_only", "frozen_text", "frozen_text_pixels", "graph_only")


def _dir_name(name: str, replicate: int) -> str:
    return name if replicate == 0 else f"{name}-seed{replicate}"


def method_dirs(runs: Path, methods: Sequence[str], seeds: int) -> dict[str, list[Path]]:
    """{method: [its directory per seed]}: ``runs/NAME``, ``runs/NAME-seed1``, ...; a method that
    is not seeded (deterministic) has one directory."""
    return {m: [runs / _dir_name(m, i) for i in range(seeds if METHODS[m].seeded else 1)] for m in methods}


# ------------------------------------------------------------------------------ settings
@dataclass(frozen=True)
class CompareSettings:
    """The parameters of a comparison (all but ``device`` are recorded in compare.json / demo.json).

    seeds: training seeds of each trained method; overrides: ``key=value`` training-config
    overrides for every trained method; max_steps: their ``train.max_steps`` (None: the configs');
    graph_steps: the graph-only baseline's steps; seed: the split seed (and the graph baseline's);
    cold_start_fraction: pins made cold start (None: the dataset's ``fresh`` column); methods:
    :data:`METHODS` names, in report order; vlm: the local Qwen-VL checkpoint of the
    ``frozen_vlm`` method (required by it)."""
    seeds: int = 1
    overrides: tuple[str, ...] = ()
    max_steps: int | None = None
    graph_steps: int = GRAPH_STEPS
    device: str = "auto"
    seed: int = 0
    cold_start_fraction: float | None = None
    methods: tuple[str, ...] = DEFAULT_METHODS
    vlm: str | None = None

    def check(self) -> None:
        """CompareError (or the config's / device's own error) before any work."""
        from graph.build_inputs import check_fractions
        from graph.devices import check_device

        from training.config import load_train_config
        if int(self.seeds) < 1:
            raise CompareError(f"--seeds {self.seeds}: expected at least 1")
        if self.max_steps is not None and int(self.max_steps) < 1:
            raise CompareError(f"--max-steps {self.max_steps}: expected at least 1")
        if int(self.graph_steps) < 0:
            raise CompareError(f"--graph-steps {self.graph_steps}: expected 0 or more")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods or len(set(self.methods)) != len(self.methods):
            raise CompareError(f"methods {list(self.methods)}: expected distinct names among {', '.join(METHODS)}")
        for item in self.overrides:
            if "=" not in item:
                raise CompareError(f"--set {item!r}: expected KEY=VALUE (e.g. train.batch_size=32)")
        if "frozen_vlm" in self.methods and self.vlm is None:
            raise CompareError("method frozen_vlm needs a local Qwen2-VL / Qwen3-VL checkpoint: --vlm PATH")
        if self.vlm is not None and not Path(self.vlm).is_dir():
            raise CompareError(f"--vlm {self.vlm}: no such checkpoint folder (models are loaded from a local path)")
        check_fractions(self.cold_start_fraction, 0.05, 0.05)
        check_device(self.device, "--device", allow_auto=True)
        # A bad key or value is named now, not after the graph store is built.
        for m in self.methods:
            if METHODS[m].config is not None:
                load_train_config(METHODS[m].config, self._train_overrides(Path("graph"), Path("cache")),
                                  check_devices=False)

    def params(self) -> dict[str, Any]:
        return {"seeds": int(self.seeds), "seed": int(self.seed), "cold_start_fraction": self.cold_start_fraction,
                "max_steps": self.max_steps, "graph_steps": int(self.graph_steps), "overrides": list(self.overrides),
                "methods": list(self.methods), **({"vlm": self.vlm} if self.vlm is not None else {})}

    def _train_overrides(self, graph_dir: Path, cache_dir: Path) -> list[str]:
        out = [f"data.graph={graph_dir}", f"data.cache_dir={cache_dir}", f"train.device={self.device}"]
        if self.max_steps is not None:
            out.append(f"train.max_steps={self.max_steps}")
        return out + list(self.overrides)


# ------------------------------------------------------------------------------ progress
def say(*args: Any, **kwargs: Any) -> None:
    """print, flushed (progress lines interleave with the bars on stderr)."""
    kwargs.setdefault("flush", True)
    print(*args, **kwargs)


class Stages:
    """``[i/N] text  (elapsed s)`` progress lines; ``times`` collects each step's seconds."""

    def __init__(self, total: int, log: Callable[[str], Any] = say, t0: float | None = None):
        self.total, self.log, self.i = total, log, 0
        self.t0 = time.perf_counter() if t0 is None else t0
        self.times: dict[str, float] = {}

    def start(self, text: str) -> float:
        self.i += 1
        self.log(f"[{self.i}/{self.total}] {text}  ({time.perf_counter() - self.t0:.0f} s)")
        return time.perf_counter()

    def done(self, key: str, started: float) -> None:
        self.times[key] = time.perf_counter() - started


def num_stages(settings: CompareSettings) -> int:
    """The progress lines of :func:`compare_into`: the graph, one per method directory, the report."""
    return 2 + sum(len(v) for v in method_dirs(Path("runs"), settings.methods, settings.seeds).values())


# ------------------------------------------------------------------------------ the comparison
def _seed_overrides(config: str, user: Sequence[str], replicate: int) -> list[str]:
    """Replicate ``i`` >= 1: ``train.seed`` and ``sampler.seed`` of the config (with the user's
    overrides) plus ``i``; replicate 0 adds nothing (the single-seed run, unchanged)."""
    if replicate == 0:
        return []
    from training.config import load_train_config
    cfg = load_train_config(config, list(user), check_devices=False)
    return [f"train.seed={int(cfg.train.seed) + replicate}", f"sampler.seed={int(cfg.sampler.seed) + replicate}"]


def _train(name: str, config: str, run_dir: Path, overrides: list[str], log: Callable[[str], Any]) -> None:
    from training.trainer import train_or_resume
    summary = train_or_resume(config, run_dir, overrides, log=lambda msg: log(f"      {msg}"))
    if not summary:
        raise CompareError(f"training {name} did not finish (see {run_dir / 'train.log'})")


def mean_metrics(per_seed: Sequence[Mapping[str, float | None]]) -> dict[str, float | None]:
    """{metric: mean over seeds} of one method's headline metrics (None where any seed has None)."""
    keys = [k for k in per_seed[0]]
    out: dict[str, float | None] = {}
    for k in keys:
        vals = [m.get(k) for m in per_seed]
        out[k] = None if any(v is None for v in vals) else float(sum(vals) / len(vals))
    return out


def compare_into(dataset_dir: str | Path, out: Path, settings: CompareSettings, stages: Stages, *,
                 title: str | None = None, extra_md: str = "") -> dict[str, Any]:
    """The comparison's steps into ``out`` (see the module docstring), without its manifest: for a
    caller that has checked ``out`` and holds its lock (:func:`run_compare`, ``pinclip demo``).
    ``stages`` prints the progress lines (``num_stages(settings)`` of them) and collects timings.
    Returns write_report's dict with ``metrics`` (seed means when seeds > 1), ``checks`` (on
    them), ``significance`` and ``dirs`` ({method: [directory per seed]})."""
    from graph import PinBoardGraph
    from graph.dataset import build_graph_from_dataset
    from graph.stats import format_stats, graph_stats

    dataset_dir = Path(dataset_dir).absolute()
    out = Path(out).absolute()
    log = stages.log
    graph_dir, runs, cache = out / "graph", out / "runs", out / "cache"

    cold = "the dataset's fresh pins" if settings.cold_start_fraction is None \
        else f"cold-start fraction {settings.cold_start_fraction}"
    s = stages.start(f"building the graph store -> {graph_dir}")
    if (graph_dir / "manifest.json").is_file():
        g = PinBoardGraph.open(graph_dir)
    else:
        log(f"      from {dataset_dir} (split seed {settings.seed}, {cold})")
        g = build_graph_from_dataset(dataset_dir, graph_dir, cold_start_fraction=settings.cold_start_fraction,
                                     seed=settings.seed)
    stats = graph_stats(g)
    (out / "graph_stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    log(format_stats(stats))
    stages.done("graph", s)

    dirs = method_dirs(runs, settings.methods, settings.seeds)
    train_overrides = settings._train_overrides(graph_dir, cache)
    for name, paths in dirs.items():
        m = METHODS[name]
        for i, d in enumerate(paths):
            suffix = "" if i == 0 else f" (seed {i})"
            if m.config is not None:
                s = stages.start(f"{m.title}{suffix}")
                _train(d.name, m.config, d, train_overrides + _seed_overrides(m.config, settings.overrides, i), log)
                stages.done(m.timing_key(i), s)
                continue
            b = BASELINES[m.baseline]
            # The comparison's one model setting is the VLM checkpoint; every baseline that computes
            # on a device gets the comparison's.
            opt = BaselineOptions(seed=settings.seed + i, steps=settings.graph_steps, progress=True,
                                  model=settings.vlm if m.baseline == "frozen-vlm" else None,
                                  device=settings.device if "device" in b.options else "cpu")
            if (d / "method.json").is_file():
                stages.start(f"{b.reused}{suffix}")
                continue
            s = stages.start(f"{b.describe(opt)}{suffix}")
            b.build(g, graph_dir, d, opt, _dir_name(name, i))
            stages.done(m.timing_key(i), s)

    s = stages.start("evaluating every method on the same splits; writing the report")
    rep = _evaluate_and_report(out, dirs, settings, title=title, extra_md=extra_md, log=log)
    stages.done("evaluate_report", s)
    return rep


def _evaluate_and_report(out: Path, dirs: dict[str, list[Path]], settings: CompareSettings, *, title: str | None,
                         extra_md: str, log: Callable[[str], Any]) -> dict[str, Any]:
    from graph.atomic import atomic_write_bytes

    from training.evaluation.report import bar_checks, format_rows, metrics_table, write_report
    from training.evaluation.run_eval import load_evaluation
    from training.evaluation.significance import write_significance
    from training.evaluation.summary import headline_metrics

    # Every directory is evaluated first (evaluation.json + per-query scores): the seed means and
    # the bootstrap need them, and write_report then reuses them.
    per_seed = {name: [headline_metrics(load_evaluation(d, device=settings.device, log=log)["metrics"])
                       for d in paths] for name, paths in dirs.items()}
    means = {name: mean_metrics(v) for name, v in per_seed.items()}
    reference = REFERENCE if REFERENCE in dirs else next(iter(dirs))
    sig = write_significance(out, {k: list(v) for k, v in dirs.items()}, reference=reference)

    md = [extra_md] if extra_md else []
    seeded = [n for n, v in dirs.items() if len(v) > 1]
    if settings.seeds > 1:
        md += [f"**Seeds**: {settings.seeds} training seeds of {', '.join(seeded)} (`runs/NAME`, "
               f"`runs/NAME-seed1`, ...); "
               + (f"{', '.join(n for n in dirs if n not in seeded)}: deterministic, one directory. "
                  if len(seeded) < len(dirs) else "")
               + f"`metrics.json` holds the **mean over the {settings.seeds} seeds** of each method:", "",
               format_rows(metrics_table(means), markdown=True), "",
               "The tables below show every seed's directory on its own (`NAME` is seed 0); the bar's "
               "differences and the confidence intervals are over seeds and query pins (`significance.json`)."]
    all_dirs = [d for paths in dirs.values() for d in paths]
    rep = write_report(all_dirs, out, device=settings.device, log=log, title=title or "PinCLIP comparison",
                       extra_md="\n".join(md), significance=sig)
    if settings.seeds > 1:
        atomic_write_bytes(out / "metrics.json", (json.dumps(means, indent=2) + "\n").encode())
        rep["metrics"], rep["checks"] = means, bar_checks(means, sig)
    rep.update(significance=sig, dirs=dirs, per_seed=per_seed)
    return rep


# ------------------------------------------------------------------------------ the directory
def check_params(out: Path, manifest: str, fmt: str, params: dict[str, Any], kind: OutputKind, what: str,
                 legacy: Mapping[str, Any] = {}) -> None:
    """``out`` must be new, empty, or made by the same command (``manifest``'s ``format`` ==
    ``fmt``) with the same ``params``: else CompareError naming the difference (old, new) or the
    output policy's error. Writes the manifest. ``legacy``: values of keys an older manifest
    lacks (e.g. ``seeds``: 1)."""
    from graph.output_dir import check_output_dir
    f = out / manifest
    check_output_dir(out, kind)
    if f.is_file():
        old = {**legacy, **{k: v for k, v in json.loads(f.read_text()).items() if k != "format"}}
        if old != params:
            diff = {k: (old.get(k), params.get(k)) for k in sorted(set(old) | set(params))
                    if old.get(k) != params.get(k)}
            raise CompareError(f"{out} holds {what} made with other parameters {diff} (old, new): "
                               "pick another --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    f.write_text(json.dumps({"format": fmt, **params}, indent=2) + "\n")


def run_compare(dataset_dir: str | Path, out: str | Path, *, seeds: int = 1, overrides: Sequence[str] = (),
                max_steps: int | None = None, graph_steps: int = GRAPH_STEPS, device: str = "auto", seed: int = 0,
                cold_start_fraction: float | None = None, methods: Sequence[str] = DEFAULT_METHODS,
                vlm: str | None = None, title: str | None = None, extra_md: str = "",
                log: Callable[[str], Any] = say) -> dict[str, Any]:
    """Compare the ``methods`` on the dataset directory ``dataset_dir`` into ``out`` (module
    docstring). Returns :func:`compare_into`'s dict plus ``timings`` ({step: seconds, "total"},
    also written to ``out/timings.json``). Raises CompareError for bad parameters or an ``out``
    made with other ones, ``graph.output_dir.OutputDirError`` for an ``out`` of something else.
    ``vlm``: a local Qwen-VL checkpoint; the frozen-VLM baseline (``frozen_vlm``) joins the methods."""
    from graph.locks import exclusive_lock
    methods = tuple(methods)
    if vlm is not None:
        vlm = str(Path(vlm).expanduser().absolute())
        methods += ("frozen_vlm",) if "frozen_vlm" not in methods else ()
    settings = CompareSettings(seeds=int(seeds), overrides=tuple(overrides), max_steps=max_steps,
                               graph_steps=int(graph_steps), device=device, seed=int(seed),
                               cold_start_fraction=cold_start_fraction, methods=methods, vlm=vlm)
    settings.check()
    dataset_dir = Path(dataset_dir).absolute()
    if not dataset_dir.is_dir():
        raise CompareError(f"{dataset_dir}: no such dataset directory")
    out = Path(out).absolute()
    if out == dataset_dir or out in dataset_dir.parents:
        raise CompareError(f"{out}: holds the dataset {dataset_dir}; pick an --out outside it")
    params = {"dataset": str(dataset_dir), **settings.params()}
    with exclusive_lock(out, "comparison directory"):
        check_params(out, COMPARE_OUTPUT.manifest, COMPARE_FORMAT, params, COMPARE_OUTPUT, "a comparison")
        stages = Stages(num_stages(settings), log=log)
        t0 = stages.t0
        rep = compare_into(dataset_dir, out, settings, stages,
                           title=title or f"PinCLIP comparison on {dataset_dir.name}",
                           extra_md=extra_md or f"Dataset: `{dataset_dir}`; runs and baselines in `runs/`.")
        rep["timings"] = write_timings(out, stages.times, t0)
    return rep


def write_timings(out: Path, times: Mapping[str, float], t0: float) -> dict[str, float]:
    timings = {**times, "total": time.perf_counter() - t0}
    (out / "timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    return timings


def print_summary(rep: Mapping[str, Any], out: Path, what: str, log: Callable[[str], Any] = say) -> None:
    """The comparison table, the bar checks and where the files are (the end of demo / compare)."""
    from training.evaluation.report import format_checks, format_rows, metrics_table
    log("")
    log(format_rows(metrics_table(rep["metrics"])))
    log("")
    if rep["checks"]:
        log(format_checks(rep["checks"]))
    total = rep.get("timings", {}).get("total", 0.0)
    log(f"\n{what} finished in {total / 60:.1f} min; report: {out / 'report.md'}, metrics: {out / 'metrics.json'}"
        + (f", significance: {out / 'significance.json'}" if (out / "significance.json").is_file() else ""))
