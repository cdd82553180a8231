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
``CURVE_KS`` (for recall@k curves), board-mate recall@10 of each single modality, and the
neighborhood quality of the pin embedding: board coherence on train edges, alignment of board
mates and uniformity, and on the synthetic world the purity of nearest neighbors with respect to
the hidden topic and style (when the graph's source dataset holds ``truth_pins.parquet``).

The result is written to ``DIR/evaluation.json`` (atomically)::

    {"method": str, "kind": "run"|"baseline", "step": int|None, "graph": path,
     "metrics": {name: float|None, ...},        # the DESIGN.md keys plus curve cutoffs
     "modalities": {"image"|"text"|"fused"|"graph": board_recall@10},
     "neighborhood": {"board_coherence": .., "alignment": .., "uniformity": .., "topic_purity@10": ..},
     "counts": {"pins": P, "test_edges": .., "cold_start_edges": ..}, "seconds": float}
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import torch

from graph.splits import COLD, TEST, TRAIN
from training.evaluation.neighborhood import alignment, board_coherence, synthetic_purity, uniformity
from training.evaluation.summary import PIN_EMBEDDING_ORDER, method_metrics

__all__ = ["CURVE_KS", "EvaluationError", "evaluate_embeddings", "evaluate_method", "evaluate_dir",
           "current_evaluation", "load_evaluation",
           "load_method", "save_baseline", "method_name", "truth_labels", "board_mate_pairs"]

CURVE_KS = (1, 5, 10, 20, 50)
EVALUATION_FILE = "evaluation.json"
BASELINE_FILE = "method.json"
BASELINE_FORMAT = "pinclip-baseline"


class EvaluationError(ValueError):
    """A directory that cannot be evaluated (names the directory and what is missing)."""


def _write_json_atomic(path: Path, obj: Any) -> None:
    from graph.atomic import atomic_write_bytes
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def _latest_step(run_dir: Path) -> int | None:
    from training.checkpoint import list_checkpoints
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
    import pyarrow.parquet as pq
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
                        seed: int = 0, backend: str = "auto", max_overlap_seeds: int = 500) -> dict[str, Any]:
    """Score one method's pin embeddings on ``g``'s splits (see the module docstring).

    emb: {"image"|"text"|"fused"|"graph": float [P, D]}; supported: bool [P] pins the method can
    embed (default all); has_image / has_text: bool [P] for the image-text metrics.
    """
    t0 = time.perf_counter()
    emb = {k: torch.as_tensor(np.asarray(v)).float() for k, v in emb.items()}
    P = g.num_pins
    sup = torch.ones(P, dtype=torch.bool) if supported is None else torch.as_tensor(np.asarray(supported)).bool()
    metrics = method_metrics(g, emb, supported=sup, has_image=has_image, has_text=has_text, seed=seed,
                             backend=backend, max_overlap_seeds=max_overlap_seeds, curve_ks=ks)
    pin_name = next(n for n in PIN_EMBEDDING_ORDER if n in emb)
    modalities = {}
    if len(emb) > 1:
        for name in (n for n in PIN_EMBEDDING_ORDER if n in emb):
            # The pin embedding's board metrics are already in ``metrics``.
            m = metrics if name == pin_name else method_metrics(g, {name: emb[name]}, supported=sup, seed=seed,
                                                                backend=backend, max_overlap_seeds=0)
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
    truth = truth_labels(g)
    if truth is not None:
        query = torch.nonzero(sup).squeeze(1)
        # Purity over supported pins only: an unsupported pin has no meaningful neighbors.
        pe = pin_emb.clone()
        pe[~sup] = 0
        labels = SimpleNamespace(pin_topic=truth["topic"], pin_style=truth["style"])
        hood.update(synthetic_purity(pe, labels, k=10, query_pins=query))
    return _clean({
        "method": method, "metrics": metrics, "modalities": modalities, "neighborhood": hood,
        "counts": {"pins": P, "supported_pins": int(sup.sum()), "test_edges": int((split == TEST).sum()),
                   "cold_start_edges": int((split == COLD).sum())},
        "seconds": time.perf_counter() - t0,
    })


# ------------------------------------------------------------------------------ directories
def method_name(path: str | os.PathLike) -> str:
    """The method name of a directory: ``method.json``'s name, else the directory name."""
    path = Path(path)
    if (path / BASELINE_FILE).is_file():
        return json.loads((path / BASELINE_FILE).read_text())["method"]
    return path.name


def save_baseline(out: str | os.PathLike, method: str, graph_path: str | os.PathLike,
                  emb: dict[str, torch.Tensor], supported: Any = None, info: dict | None = None) -> Path:
    """Write a baseline directory (see the module docstring) atomically. emb: {name: float [P, D]}
    with names among image / text / fused / graph."""
    from graph.atomic import atomic_directory
    bad = [k for k in emb if k not in PIN_EMBEDDING_ORDER]
    if bad:
        raise ValueError(f"baseline embedding names {bad}: expected some of {list(PIN_EMBEDDING_ORDER)}")
    out = Path(out)
    with atomic_directory(out) as tmp:
        n = None
        for name, e in emb.items():
            arr = torch.as_tensor(e).detach().float().cpu().numpy()
            n = arr.shape[0]
            np.save(tmp / f"embedding_{name}.npy", arr)
        sup = np.ones(n or 0, dtype=bool) if supported is None else np.asarray(torch.as_tensor(supported).cpu(), bool)
        np.save(tmp / "supported.npy", sup)
        meta = {"format": BASELINE_FORMAT, "method": method, "graph": str(Path(graph_path).absolute()),
                "embeddings": sorted(emb), "info": info or {}}
        (tmp / BASELINE_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return out


def _has_text(g: Any) -> torch.Tensor | None:
    """bool [P]: pins with a non-empty caption (None when the store has no features)."""
    if g.features is None:
        return None
    return torch.tensor([t is not None and t != "" for t in g.features.pin_text(np.arange(g.num_pins))])


def load_method(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print) -> dict[str, Any]:
    """Open a method directory: {"kind", "method", "graph", "emb": {name: float32 [P, D]},
    "supported": bool [P], "has_image", "has_text", "step"}. A training run is embedded first
    when ``RUN_DIR/embeddings`` is missing or older than its newest checkpoint."""
    from graph import PinBoardGraph
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
        g = PinBoardGraph.open(meta["graph"])
        sup = torch.from_numpy(np.load(path / "supported.npy"))
        for name, e in emb.items():
            if e.shape[0] != g.num_pins:
                raise EvaluationError(f"{path / f'embedding_{name}.npy'}: {e.shape[0]} rows, the graph "
                                      f"{meta['graph']} has {g.num_pins} pins")
        return {"kind": "baseline", "method": meta["method"], "graph": g, "graph_path": meta["graph"], "emb": emb,
                "supported": sup, "has_image": None, "has_text": _has_text(g), "step": None}
    if not (path / "config.yaml").is_file():
        raise EvaluationError(f"{path}: neither a training run (config.yaml) nor a baseline directory "
                              f"({BASELINE_FILE})")
    from training.checkpoint import CheckpointError
    from training.embed import embed_run, load_embeddings
    step = _latest_step(path)
    if step is None:
        raise CheckpointError(f"{path}: no checkpoint to evaluate (train first)")
    emb_dir = path / "embeddings"
    current = None
    if (emb_dir / "manifest.json").is_file():
        current = json.loads((emb_dir / "manifest.json").read_text()).get("step")
    if current != step:
        log(f"embedding every pin of {path} with the step-{step} checkpoint -> {emb_dir}")
        embed_run(path, emb_dir, device=device, progress=progress, log=log)
    e = load_embeddings(emb_dir, mmap=False)
    graph_path = path / "graph"
    from training.config import load_train_config
    cfg = load_train_config(path / "config.yaml")
    if cfg.data.graph:
        graph_path = Path(cfg.data.graph)
    g = PinBoardGraph.open(graph_path)
    return {"kind": "run", "method": path.name, "graph": g, "graph_path": str(graph_path.absolute()),
            "emb": {k: torch.from_numpy(np.asarray(e[k], dtype=np.float32)) for k in ("image", "text", "fused")},
            "supported": None, "has_image": torch.from_numpy(~np.asarray(e["image_missing"])),
            "has_text": _has_text(g), "step": step}


def evaluate_method(m: dict[str, Any], path: str | os.PathLike, method: str | None = None,
                    write: bool = True) -> dict[str, Any]:
    """Evaluate a method opened with :func:`load_method` from ``path``; writes
    ``DIR/evaluation.json`` (unless ``write`` is False) and returns its contents."""
    path = Path(path)
    result = evaluate_embeddings(m["graph"], m["emb"], method or m["method"], supported=m["supported"],
                                 has_image=m["has_image"], has_text=m["has_text"])
    result.update({"kind": m["kind"], "step": m["step"], "graph": m["graph_path"], "dir": str(path.absolute())})
    if write:
        _write_json_atomic(path / EVALUATION_FILE, result)
    return result


def evaluate_dir(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print,
                 method: str | None = None, write: bool = True) -> dict[str, Any]:
    """Evaluate a method directory and write ``DIR/evaluation.json``; returns its contents."""
    return evaluate_method(load_method(path, device=device, progress=progress, log=log), path, method, write)


def current_evaluation(path: str | os.PathLike) -> dict[str, Any] | None:
    """``DIR/evaluation.json`` when it is current (a baseline's, or a run's made at its newest
    checkpoint), else None."""
    path = Path(path)
    f = path / EVALUATION_FILE
    if not f.is_file():
        return None
    ev = json.loads(f.read_text())
    if ev.get("kind") == "baseline":
        return ev
    if ev.get("step") is not None and _latest_step(path) == ev.get("step"):
        return ev
    return None


def load_evaluation(path: str | os.PathLike, device: str = "auto", progress: bool = True, log=print) -> dict[str, Any]:
    """:func:`current_evaluation`, else a fresh :func:`evaluate_dir`."""
    return current_evaluation(path) or evaluate_dir(path, device=device, progress=progress, log=log)
