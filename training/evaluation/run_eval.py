"""Evaluate a method directory: a training run or a saved baseline (``pinclip evaluate``).

Two kinds of directory are evaluated the same way:

* a **training run** (``config.yaml`` + checkpoints): every pin is embedded with the newest
  checkpoint into ``RUN_DIR/embeddings`` (``training.embed.embed_run``; re-used while it matches
  the newest checkpoint), then scored;
* a **baseline directory** (``method.json`` + ``embedding_<name>.npy`` float32 [P, D] per
  embedding + ``supported.npy`` bool [P]), written by :func:`save_baseline`: the frozen text
  encoder and the graph-only GNN of the demo.

Scores (:func:`evaluate_embeddings`) are computed on the graph's splits: the headline metrics of
DESIGN.md (``training.evaluation.summary.method_metrics``) with recall at every cutoff of
``CURVE_KS`` (for recall@k curves), board-mate recall@10 of each head, and the neighborhood
quality of the pin embedding: board coherence on train edges, alignment of board mates and
uniformity, and on the synthetic world (when the graph's source dataset holds
``truth_pins.parquet``) the purity of nearest neighbors with respect to the hidden topic and
style and the topic-level text -> image precision ``t2i_topic_precision@10``.

**Headline head.** Every method is scored on the embedding it was trained to produce
(``training.evaluation.heads``): a run's heads trained by some loss term with weight > 0 (from
``RUN_DIR/model_config.json``: image and text by the image-text loss, fused by a neighbor term;
the CLIP-only run never trains its fusion) compete on board-mate recall@10 of the store's
VALIDATION edges, and the best is the headline head: the pin embedding of the headline pin -> pin
metrics, ``neighbor_overlap@10`` and the neighborhood quality. A baseline keeps its only head.
A store without validation edges falls back to the designated head (fused when trained, else
the first trained of graph, image, text).

**Per-query scores.** Next to ``evaluation.json``, ``DIR/per_query.npz``
(``training.evaluation.per_query``, written atomically before it) holds the query pins and the
value of each query behind ``board_recall@10``, ``cold_start_board_recall@10``, ``board_mrr``,
``t2i_recall@10``, ``i2t_recall@10`` and ``t2i_topic_precision@10`` (those the method computes),
for paired comparisons (``training.evaluation.significance``).

Every score comes with its chance level (:func:`chance_metrics`, ``evaluation.json``'s
``chance``): the same metrics, same protocol and same queries, of random unit embeddings (seeded,
``CHANCE_DIM`` dimensions, every pin supported; image-text pairs where the store has a non-empty
caption and an image), a reference row in ``pinclip evaluate`` and ``pinclip report``, never a
method of ``metrics.json``.

Nothing untrustworthy is scored: an embedding with NaN or infinite rows (of pins the method
supports) is an :class:`EvaluationError`, and a directory whose graph store changed since the
run or baseline was made (``RUN_DIR/graph_identity.json``, ``method.json``'s ``graph_identity``;
``training.checkpoint.check_graph_identity``) raises ``training.checkpoint.GraphChangedError``
naming both identities, since its held-out edges may have been training edges. With
``allow_changed_graph=True`` (``--allow-changed-graph``) it is scored anyway and
``evaluation.json`` records ``graph_changed``. Directories made before identities were recorded
are not checked.

The result is written to ``DIR/evaluation.json`` (atomically)::

    {"method": str, "kind": "run"|"baseline", "step": int|None, "graph": path, "dir": path,
     "evaluation_version": 2,                   # older files are re-evaluated
     "graph_manifest_sha256": str,              # the store scored on
     "graph_changed": {"recorded": .., "current": ..},   # only when allowed
     "headline_head": "fused"|"image"|"text"|"graph",    # the head behind the headline metrics
     "headline_head_selected_by": str,          # e.g. "best board_recall@10 on the validation split ..."
     "heads_trained": [head, ...],              # heads some loss term trains
     "heads": {head: {"board_recall@10", "board_mrr", "cold_start_board_recall@10",
                      "val_board_recall@10", "trained": bool}},   # every head of the method
     "metrics": {name: float|None, ...},        # the DESIGN.md keys (of the headline head) plus
                                                # curve cutoffs; on the synthetic world also
                                                # t2i_topic_precision@10, t2i_recall@10_topic_ceiling,
                                                # t2i_topic_pins_per_topic
     "modalities": {head: {"board_recall@10", "cold_start_board_recall@10"}},   # (as in heads)
     "chance": {name: float|None, ...},         # the same metrics of random unit embeddings
     "neighborhood": {"board_coherence": .., "alignment": .., "uniformity": .., "topic_purity@10": ..},
     "counts": {"pins": P, "supported_pins": .., "val_edges": .., "test_edges": .., "cold_start_edges": ..},
     "seconds": float}
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F

from graph import PinBoardGraph
from graph.atomic import atomic_directory, atomic_write_bytes
from graph.errors import ToolkitError
from graph.output_dir import OutputKind
from graph.splits import COLD, TEST, TRAIN, VAL
from training.checkpoint import (CheckpointError, check_graph_identity, graph_identity, list_checkpoints,
                                 read_graph_identity)
from training.config import load_train_config
from training.embed import GRAPH_CHANGED_REMEDY, embed_run, load_embeddings
from training.evaluation.neighborhood import alignment, board_coherence, synthetic_purity, uniformity
from training.evaluation.heads import select_headline_head, trained_heads
from training.evaluation.per_query import PER_QUERY_FILE, save_per_query
from training.evaluation.summary import PIN_EMBEDDING_ORDER, board_recall_on_split, method_metrics

__all__ = ["CURVE_KS", "CHANCE_DIM", "EVALUATION_VERSION", "EvaluationError", "chance_metrics", "evaluate_embeddings",
           "evaluate_method", "run_heads_trained",
           "evaluate_dir", "current_evaluation", "load_evaluation", "allowing_changed_graph",
           "load_method", "save_baseline", "method_name", "truth_labels", "board_mate_pairs"]

CURVE_KS = (1, 5, 10, 20, 50)
CHANCE_DIM = 64          # dimensions of the random unit embeddings of the chance level
EVALUATION_FILE = "evaluation.json"
# 2: headline head chosen among trained heads on validation edges, per_query.npz, heads.
EVALUATION_VERSION = 2
BASELINE_FILE = "method.json"
BASELINE_FORMAT = "pinclip-baseline"
BASELINE_OUTPUT = OutputKind("a baseline method directory", "pinclip demo", "method.json", "format", BASELINE_FORMAT)


class EvaluationError(ToolkitError, ValueError):
    """A directory that cannot be evaluated (names the directory and what is missing or wrong)."""


# Set by allowing_changed_graph(): lets callers that cannot pass the keyword through
# (training.evaluation.report.write_report calls load_method itself) allow a changed store.
_ALLOW_CHANGED_GRAPH: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_changed_graph", default=False)


@contextlib.contextmanager
def allowing_changed_graph(allow: bool = True):
    """Within the block, :func:`load_method` (and so :func:`evaluate_dir` and the report) acts as
    if called with ``allow_changed_graph=allow`` or its own argument, whichever allows."""
    token = _ALLOW_CHANGED_GRAPH.set(bool(allow))
    try:
        yield
    finally:
        _ALLOW_CHANGED_GRAPH.reset(token)


def _manifest_sha256(graph_path: str | os.PathLike) -> str | None:
    """sha256 of a graph store's manifest.json, or None when it has none."""
    try:
        return hashlib.sha256((Path(graph_path) / "manifest.json").read_bytes()).hexdigest()
    except OSError:
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _latest_step(run_dir: Path) -> int | None:
    items = list_checkpoints(run_dir)
    return items[-1][0] if items else None


def _clean(x: Any) -> Any:
    """JSON-friendly floats: NaN -> None, numpy scalars -> float."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (float, np.floating)):
        return None if not np.isfinite(x) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


# ------------------------------------------------------------------------------ pieces
def truth_labels(g: Any) -> dict[str, np.ndarray] | None:
    """Hidden synthetic-world labels per internal pin id: {"topic", "style"} int64 [P] (-1 where
    unknown), or None when the graph's source dataset has no ``truth_pins.parquet``."""
    src = (getattr(g, "manifest", None) or {}).get("source") or {}
    root = src.get("dataset_dir")
    if not root or not (Path(root) / "truth_pins.parquet").is_file():
        return None
    t = pq.read_table(Path(root) / "truth_pins.parquet", columns=["pin_id", "topic", "style"])
    idx = np.asarray(g.pin_index(t.column("pin_id")), dtype=np.int64)
    ok = idx >= 0
    out = {}
    for name in ("topic", "style"):
        lab = np.full(g.num_pins, -1, dtype=np.int64)
        lab[idx[ok]] = t.column(name).to_numpy()[ok]
        out[name] = lab
    return out


def board_mate_pairs(g: Any, max_pairs: int = 20000, seed: int = 0) -> torch.Tensor:
    """int64 [M, 2]: up to ``max_pairs`` pairs of distinct pins sharing a board on TRAIN edges
    (for each of M random train edges (p, b), a random other member of b), drawn with ``seed``."""
    pins, boards = g.edges()
    split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
    tp, tb = pins[split == TRAIN].long(), boards[split == TRAIN].long()
    if tp.numel() == 0:
        return torch.zeros(0, 2, dtype=torch.int64)
    gen = torch.Generator().manual_seed(seed)
    order = torch.argsort(tb, stable=True)
    sp, sb = tp[order], tb[order]
    counts = torch.bincount(sb, minlength=g.num_boards)
    start = torch.cumsum(counts, 0) - counts
    pick = torch.randint(tp.numel(), (min(max_pairs, tp.numel()),), generator=gen)
    a, b = tp[pick], tb[pick]
    other = sp[start[b] + (torch.rand(pick.numel(), generator=gen) * counts[b]).long().clamp(max=counts[b] - 1)]
    keep = other != a
    return torch.stack([a[keep], other[keep]], 1)


def evaluate_embeddings(g: Any, emb: dict[str, torch.Tensor], method: str, supported: Any = None,
                        has_image: Any = None, has_text: Any = None, ks: Sequence[int] = CURVE_KS,
                        seed: int = 0, backend: str = "auto", max_overlap_seeds: int = 500,
                        heads_trained: Sequence[str] | None = None,
                        per_query: dict | None = None) -> dict[str, Any]:
    """Score one method's pin embeddings on ``g``'s splits (see the module docstring).

    emb: {"image"|"text"|"fused"|"graph": float [P, D]}; supported: bool [P] pins the method can
    embed (default all); has_image / has_text: bool [P] for the image-text metrics.
    heads_trained: the heads some loss trains (``training.evaluation.heads.trained_heads``;
    None: every head). The headline head is chosen among them on the VALIDATION split
    (``select_headline_head``); every head's board metrics are in ``heads``.
    per_query: a dict filled with the headline metrics' per-query values ({metric: (pins, values)}).
    Raises :class:`EvaluationError` when a supported pin's row of any embedding is not finite.
    """
    t0 = time.perf_counter()
    emb = {k: torch.as_tensor(np.asarray(v)).float() for k, v in emb.items()}
    P = g.num_pins
    sup = torch.ones(P, dtype=torch.bool) if supported is None else torch.as_tensor(np.asarray(supported)).bool()
    for name, e in emb.items():
        # A NaN row ranks as a tie with everything, which tie-aware metrics can score as perfect.
        bad = ~torch.isfinite(e).all(dim=1) & sup[:e.shape[0]] if e.ndim == 2 else None
        if bad is not None and bool(bad.any()):
            first = int(torch.nonzero(bad)[0])
            raise EvaluationError(f"method {method!r}: {int(bad.sum())} of {e.shape[0]} rows of the {name!r} embedding "
                                  f"are not finite (NaN or inf; first: pin {first}); nothing can be scored on them. "
                                  "Were the weights that made them already NaN?")
    available = [n for n in PIN_EMBEDDING_ORDER if n in emb]
    trained = list(available) if heads_trained is None else [h for h in available if h in heads_trained]
    # The headline head: chosen on validation edges among the trained heads (never on test).
    val = {}
    if len(trained) > 1:
        val = {h: board_recall_on_split(g, emb[h], VAL, sup, backend=backend) for h in trained}
    pin_name, selected_by = select_headline_head(available, trained, val)
    truth = truth_labels(g)
    metrics = method_metrics(g, emb, supported=sup, has_image=has_image, has_text=has_text, seed=seed,
                             backend=backend, max_overlap_seeds=max_overlap_seeds, curve_ks=ks,
                             pin_embedding=pin_name, per_query=per_query,
                             topics=None if truth is None else truth["topic"])
    heads, modalities = {}, {}
    for name in available:
        # The headline head's board metrics are already in ``metrics``.
        m = metrics if name == pin_name else method_metrics(g, {name: emb[name]}, supported=sup, seed=seed,
                                                            backend=backend, max_overlap_seeds=0)
        if name not in val and len(available) > 1:
            val[name] = board_recall_on_split(g, emb[name], VAL, sup, backend=backend)
        heads[name] = {"board_recall@10": m.get("board_recall@10"), "board_mrr": m.get("board_mrr"),
                       "cold_start_board_recall@10": m.get("cold_start_board_recall@10"),
                       "val_board_recall@10": val.get(name), "trained": name in trained}
        if len(available) > 1:
            modalities[name] = {"board_recall@10": m.get("board_recall@10"),
                                "cold_start_board_recall@10": m.get("cold_start_board_recall@10")}
    pin_emb = emb[pin_name]
    pins, boards = g.edges()
    split = torch.from_numpy(np.asarray(g.splits.edge_split).astype(np.int64))
    train = (split == TRAIN) & sup[pins]
    hood: dict[str, Any] = {}
    if bool(train.any()):
        hood["board_coherence"] = board_coherence(pin_emb, pins[train], boards[train])["coherence"]
    pairs = board_mate_pairs(g, seed=seed)
    pairs = pairs[sup[pairs[:, 0]] & sup[pairs[:, 1]]]
    if pairs.numel():
        hood["alignment"] = alignment(pin_emb[pairs[:, 0]], pin_emb[pairs[:, 1]])
    hood["uniformity"] = uniformity(pin_emb[sup], seed=seed)
    if truth is not None:
        query = torch.nonzero(sup).squeeze(1)
        # Purity over supported pins only: an unsupported pin has no meaningful neighbors.
        pe = pin_emb.clone()
        pe[~sup] = 0
        labels = SimpleNamespace(pin_topic=truth["topic"], pin_style=truth["style"])
        hood.update(synthetic_purity(pe, labels, k=10, query_pins=query))
    return _clean({
        "method": method, "evaluation_version": EVALUATION_VERSION, "headline_head": pin_name,
        "headline_head_selected_by": selected_by, "heads_trained": trained, "heads": heads,
        "metrics": metrics, "modalities": modalities, "neighborhood": hood,
        "counts": {"pins": P, "supported_pins": int(sup.sum()), "val_edges": int((split == VAL).sum()),
                   "test_edges": int((split == TEST).sum()), "cold_start_edges": int((split == COLD).sum())},
        "seconds": time.perf_counter() - t0,
    })


def _has_image(g: Any) -> torch.Tensor | None:
    """bool [P]: pins whose dataset row names an image (None when the store has no features)."""
    if g.features is None:
        return None
    return torch.from_numpy(np.asarray(g.features.pins.column("image").is_valid(), dtype=bool))


def chance_metrics(g: Any, seed: int = 0, dim: int = CHANCE_DIM, ks: Sequence[int] = CURVE_KS,
                   backend: str = "auto", max_overlap_seeds: int = 500) -> dict[str, float | None]:
    """The chance level of :func:`evaluate_embeddings`' metrics on ``g``: ``method_metrics`` of
    random unit embeddings ("image", "text", "fused": float [P, ``dim``] drawn from
    ``torch.Generator().manual_seed(seed)``) with every pin supported, image-text pairs among the
    pins with a non-empty caption and an image in the store. Same keys as a method's ``metrics``
    (NaN -> None): the same for every method scored on ``g``. About 0.1 s for 3,000 pins."""
    gen = torch.Generator().manual_seed(seed)
    emb = {name: F.normalize(torch.randn(g.num_pins, dim, generator=gen), dim=1) for name in ("image", "text", "fused")}
    truth = truth_labels(g)
    return _clean(method_metrics(g, emb, has_image=_has_image(g), has_text=_has_text(g), seed=seed, backend=backend,
                                 max_overlap_seeds=max_overlap_seeds, curve_ks=ks,
                                 topics=None if truth is None else truth["topic"]))


# ------------------------------------------------------------------------------ directories
def method_name(path: str | os.PathLike) -> str:
    """The method name of a directory: ``method.json``'s name, else the directory name."""
    path = Path(path)
    if (path / BASELINE_FILE).is_file():
        return json.loads((path / BASELINE_FILE).read_text())["method"]
    return path.name


def save_baseline(out: str | os.PathLike, method: str, graph_path: str | os.PathLike,
                  emb: dict[str, torch.Tensor], supported: Any = None, info: dict | None = None,
                  heads_trained: Sequence[str] | None = None) -> Path:
    """Write a baseline directory (see the module docstring) atomically. emb: {name: float [P, D]}
    with names among image / text / fused / graph. ``method.json`` records the graph store's
    identity, which :func:`load_method` checks. heads_trained: the heads of ``emb`` that the
    method trained (default: all; recorded in ``method.json`` when given): only they can be the
    headline head."""
    bad = [k for k in emb if k not in PIN_EMBEDDING_ORDER]
    if bad:
        raise ValueError(f"baseline embedding names {bad}: expected some of {list(PIN_EMBEDDING_ORDER)}")
    if heads_trained is not None and not set(heads_trained) <= set(emb):
        raise ValueError(f"heads_trained={list(heads_trained)}: not all among the embeddings {sorted(emb)}")
    out = Path(out)
    with atomic_directory(out, BASELINE_OUTPUT) as tmp:
        n = None
        for name, e in emb.items():
            arr = torch.as_tensor(e).detach().float().cpu().numpy()
            n = arr.shape[0]
            np.save(tmp / f"embedding_{name}.npy", arr)
        sup = np.ones(n or 0, dtype=bool) if supported is None else np.asarray(torch.as_tensor(supported).cpu(), bool)
        np.save(tmp / "supported.npy", sup)
        meta = {"format": BASELINE_FORMAT, "method": method, "graph": str(Path(graph_path).absolute()),
                "graph_identity": graph_identity(graph_path), "embeddings": sorted(emb), "info": info or {}}
        if heads_trained is not None:
            meta["heads_trained"] = [h for h in PIN_EMBEDDING_ORDER if h in heads_trained]
        (tmp / BASELINE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _has_text(g: Any) -> torch.Tensor | None:
    """bool [P]: pins with a non-empty caption (None when the store has no features)."""
    if g.features is None:
        return None
    return torch.tensor([t is not None and t != "" for t in g.features.pin_text(np.arange(g.num_pins))])


def run_heads_trained(run_dir: str | os.PathLike, cfg: Any = None) -> list[str]:
    """The heads a training run's losses train (``training.evaluation.heads.trained_heads``) from
    the resolved model loss config in ``RUN_DIR/model_config.json``, else from ``config.yaml``."""
    run_dir = Path(run_dir)
    f = run_dir / "model_config.json"
    if f.is_file():
        loss = json.loads(f.read_text()).get("loss")
        if isinstance(loss, dict):
            return trained_heads(loss)
    import dataclasses

    from training.config import resolve_model_config
    cfg = cfg if cfg is not None else load_train_config(run_dir / "config.yaml", check_devices=False)
    return trained_heads(dataclasses.asdict(resolve_model_config(cfg).loss))


def load_method(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print,
                allow_changed_graph: bool = False) -> dict[str, Any]:
    """Open a method directory: {"kind", "method", "graph", "graph_path", "emb": {name: float32
    [P, D]}, "supported": bool [P], "has_image", "has_text", "step", "graph_identity",
    "graph_changed"}. A training run is embedded first when ``RUN_DIR/embeddings`` is missing,
    older than its newest checkpoint or made from another graph store.

    The graph store must be the one the directory recorded (see the module docstring): else
    ``training.checkpoint.GraphChangedError``, unless ``allow_changed_graph`` (or an enclosing
    :func:`allowing_changed_graph`), when ``graph_changed`` holds {"recorded", "current"}."""
    allow = bool(allow_changed_graph) or _ALLOW_CHANGED_GRAPH.get()
    path = Path(path)
    if (path / BASELINE_FILE).is_file():
        meta = json.loads((path / BASELINE_FILE).read_text())
        if meta.get("format") != BASELINE_FORMAT:
            raise EvaluationError(f"{path / BASELINE_FILE}: not a {BASELINE_FORMAT} file")
        emb = {}
        for name in meta["embeddings"]:
            f = path / f"embedding_{name}.npy"
            if not f.is_file():
                raise EvaluationError(f"{path}: {f.name} is missing (method.json lists it)")
            emb[name] = torch.from_numpy(np.load(f))
        changed = check_graph_identity(meta.get("graph_identity"), meta["graph"], f"baseline {path}",
                                       GRAPH_CHANGED_REMEDY, allow, log=log)
        g = PinBoardGraph.open(meta["graph"])
        sup = torch.from_numpy(np.load(path / "supported.npy"))
        for name, e in emb.items():
            if e.shape[0] != g.num_pins:
                raise EvaluationError(f"{path / f'embedding_{name}.npy'}: {e.shape[0]} rows, the graph "
                                      f"{meta['graph']} has {g.num_pins} pins")
        return {"kind": "baseline", "method": meta["method"], "graph": g, "graph_path": meta["graph"], "emb": emb,
                "supported": sup, "has_image": None, "has_text": _has_text(g), "step": None,
                "heads_trained": meta.get("heads_trained") or list(emb),   # a baseline keeps its own head(s)
                "graph_identity": graph_identity(meta["graph"]), "graph_changed": changed}
    if not (path / "config.yaml").is_file():
        raise EvaluationError(f"{path}: neither a training run (config.yaml) nor a baseline directory "
                              f"({BASELINE_FILE})")
    step = _latest_step(path)
    if step is None:
        raise CheckpointError(f"{path}: no checkpoint to evaluate (train first)")
    cfg = load_train_config(path / "config.yaml", check_devices=False)
    graph_path = Path(cfg.data.graph) if cfg.data.graph else path / "graph"
    # Checked before embedding: a refused store costs no embedding pass. (A missing RUN_DIR/graph
    # is rebuilt from data.dataset by embed_run, which checks it then.)
    checked = (graph_path / "manifest.json").is_file()
    changed = None
    if checked:
        changed = check_graph_identity(read_graph_identity(path), graph_path, f"run {path}", GRAPH_CHANGED_REMEDY,
                                       allow, log=log)
    emb_dir = path / "embeddings"
    made = {}
    if (emb_dir / "manifest.json").is_file():
        made = json.loads((emb_dir / "manifest.json").read_text())
    current_sha = _manifest_sha256(graph_path)
    if not checked or made.get("step") != step or made.get("graph_manifest_sha256") not in (None, current_sha):
        log(f"embedding every pin of {path} with the step-{step} checkpoint -> {emb_dir}")
        embed_run(path, emb_dir, device=device, progress=progress, log=log, allow_changed_graph=allow)
    if not checked:   # embed_run rebuilt the store (and checked it, logging what it found)
        changed = check_graph_identity(read_graph_identity(path), graph_path, f"run {path}", GRAPH_CHANGED_REMEDY,
                                       allow)
    e = load_embeddings(emb_dir, mmap=False)
    g = PinBoardGraph.open(graph_path)
    if e["fused"].shape[0] != g.num_pins:
        raise EvaluationError(f"{emb_dir}: {e['fused'].shape[0]} rows, the graph {graph_path} has {g.num_pins} pins; "
                              f"remove {emb_dir} to embed again")
    return {"kind": "run", "method": path.name, "graph": g, "graph_path": str(graph_path.absolute()),
            "emb": {k: torch.from_numpy(np.asarray(e[k], dtype=np.float32)) for k in ("image", "text", "fused")},
            "supported": None, "has_image": torch.from_numpy(~np.asarray(e["image_missing"])),
            "heads_trained": run_heads_trained(path, cfg),
            "has_text": _has_text(g), "step": step, "graph_identity": graph_identity(graph_path),
            "graph_changed": changed}


def evaluate_method(m: dict[str, Any], path: str | os.PathLike, method: str | None = None,
                    write: bool = True) -> dict[str, Any]:
    """Evaluate a method opened with :func:`load_method` from ``path``; writes
    ``DIR/evaluation.json`` (unless ``write`` is False) and returns its contents. Raises
    :class:`EvaluationError` naming ``path`` for non-finite embedding rows."""
    path = Path(path)
    per_query: dict = {}
    try:
        result = evaluate_embeddings(m["graph"], m["emb"], method or m["method"], supported=m["supported"],
                                     has_image=m["has_image"], has_text=m["has_text"],
                                     heads_trained=m.get("heads_trained"), per_query=per_query)
    except EvaluationError as exc:
        raise EvaluationError(f"{path}: {exc}") from None
    result["chance"] = chance_metrics(m["graph"])
    result.update({"kind": m["kind"], "step": m["step"], "graph": m["graph_path"], "dir": str(path.absolute())})
    if m.get("graph_identity"):
        result["graph_manifest_sha256"] = m["graph_identity"]["manifest_sha256"]
    if m.get("graph_changed"):
        result["graph_changed"] = m["graph_changed"]
    if write:
        # per_query.npz first: a current evaluation.json always has its per-query file beside it.
        save_per_query(path / PER_QUERY_FILE, per_query)
        _write_json_atomic(path / EVALUATION_FILE, result)
    return result


def evaluate_dir(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print,
                 method: str | None = None, write: bool = True, allow_changed_graph: bool = False) -> dict[str, Any]:
    """Evaluate a method directory and write ``DIR/evaluation.json``; returns its contents.
    allow_changed_graph: score it even when its graph store changed since it was made (recorded
    as ``graph_changed``); otherwise that is a ``training.checkpoint.GraphChangedError``."""
    m = load_method(path, device=device, progress=progress, log=log, allow_changed_graph=allow_changed_graph)
    return evaluate_method(m, path, method, write)


def current_evaluation(path: str | os.PathLike) -> dict[str, Any] | None:
    """``DIR/evaluation.json`` when it is current (a baseline's, or a run's made at its newest
    checkpoint; either made on the graph store as it is now), else None."""
    path = Path(path)
    f = path / EVALUATION_FILE
    if not f.is_file():
        return None
    ev = json.loads(f.read_text())
    if ev.get("evaluation_version", 1) < EVALUATION_VERSION or not (path / PER_QUERY_FILE).is_file():
        return None          # made before heads were chosen on validation edges / per-query scores
    if ev.get("graph_manifest_sha256") is not None and ev.get("graph"):
        if _manifest_sha256(ev["graph"]) != ev["graph_manifest_sha256"]:
            return None      # the store changed since: evaluate again (which checks it)
    if ev.get("kind") == "baseline":
        return ev
    if ev.get("step") is not None and _latest_step(path) == ev.get("step"):
        return ev
    return None


def load_evaluation(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print,
                    allow_changed_graph: bool = False) -> dict[str, Any]:
    """:func:`current_evaluation`, else a fresh :func:`evaluate_dir`."""
    return current_evaluation(path) or evaluate_dir(path, device=device, progress=progress, log=log,
                                                    allow_changed_graph=allow_changed_graph)
