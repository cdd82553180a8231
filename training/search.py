"""Query a faiss index of exported pins: ``pinclip search INDEX_DIR --model MODEL_DIR --text T``.

A query is a caption (``text``: ``PinEncoder.encode_text``), an image file (``image``:
``PinEncoder.encode_image``) or an indexed pin (``pin``: that pin's own row of the embedding
directory the index was built from, so no model is needed). Image, text and fused embeddings
share one space, so a text query searches an image or fused index as well.

The index directory (``training.ann``) records the embedding directory it was built from
(``"embeddings"``) and which matrix (``"which"``); that directory gives the dataset's pin ids
(``pin_external_ids.arrow``) and, through its manifest, where the pins' text and image paths
are: the ``dataset`` directory of a ``pinclip embed --dataset`` export, or the graph store of the
run (``run_dir``). When neither can be read, results carry the pin id and score only.

    from training.search import search
    out = search("idx", "model", text="red shoes", k=5)
    out["results"][0]    # {"pin_id": ..., "score": 0.83, "text": "...", "image": "/data/img/17.png"}
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from graph.errors import InputError, MissingInputError, ToolkitError
from graph.features import FeatureStore, ImagePathError
from graph.store import PinBoardGraph
from pinclip.pretrained import load as load_model_dir
from training.ann import load_index
from training.config import load_train_config
from training.distributed import resolve_device
from training.embed import load_embeddings
from training.embed_dataset import read_dataset_pins

__all__ = ["SearchError", "search", "format_results"]


class SearchError(InputError):
    """A bad query, a pin id not in the index, or an index without its embedding directory."""


def _encoder(model: Any, device: str) -> Any:
    if model is None:
        raise SearchError("a text or image query needs a model: pass --model MODEL_DIR (a pinclip export "
                          "directory) or a loaded pinclip.PinEncoder")
    if isinstance(model, (str, os.PathLike)):
        return load_model_dir(model, device=resolve_device(device))
    return model


def _pin_row(ext_ids: list, pin: Any) -> int:
    """Row of the dataset pin id ``pin`` (an int, or a string that may spell an integer id)."""
    wanted = {pin, str(pin)}
    if isinstance(pin, str) and pin.strip().lstrip("-").isdigit():
        wanted.add(int(pin))
    for row, ext in enumerate(ext_ids):
        if ext in wanted:
            return row
    raise SearchError(f"--pin {pin}: no such pin in the index (its embedding directory holds {len(ext_ids):,} pins)")


def _features(manifest: dict, num_pins: int) -> FeatureStore | None:
    """The text and image paths of an embedding directory's pins, when its manifest says where
    they are and that source still holds ``num_pins`` pins; else None."""
    try:
        if manifest.get("dataset"):
            pins = read_dataset_pins(manifest["dataset"])
            return pins.features if pins.num_pins == num_pins else None
        if manifest.get("run_dir"):
            run_dir = Path(manifest["run_dir"])
            cfg = load_train_config(run_dir / "config.yaml", check_devices=False)
            path = Path(cfg.data.graph).expanduser() if cfg.data.graph else run_dir / "graph"
            g = PinBoardGraph.open(path, image_root=cfg.data.image_root)
            if g.num_pins == num_pins and getattr(g, "features", None) is not None:
                return g.features
    except (ToolkitError, OSError, ValueError, KeyError):
        return None
    return None


def _describe(features: FeatureStore | None, row: int) -> dict:
    if features is None:
        return {}
    out: dict[str, Any] = {}
    try:
        text = features.pin_text([row])[0]
        if text is not None:
            out["text"] = text
    except (OSError, ValueError, IndexError):
        pass
    try:
        image = features.pin_image_paths([row])[0]
        if image is not None:
            out["image"] = str(image)
    except (ImagePathError, OSError, ValueError, IndexError):
        pass
    return out


def search(index_dir: str | os.PathLike, model: Any = None, *, text: str | None = None,
           image: str | os.PathLike | None = None, pin: Any = None, k: int = 10,
           device: str = "cpu") -> dict:
    """The ``k`` nearest indexed pins to one query. ``model``: a model directory (``pinclip
    export``; loaded with ``pinclip.load`` on ``device``) or a ``pinclip.PinEncoder``; not
    needed for a ``pin`` query. Exactly one of ``text``, ``image`` (a file path) and ``pin`` (a
    dataset pin id of the index). Returns ``{"query": {...}, "results": [{"pin_id", "score",
    "text", "image"}, ...]}`` best first (``text`` / ``image`` only where known). Errors are
    :class:`SearchError` (a ``graph.errors.InputError``) or the index's own."""
    given = [name for name, v in (("text", text), ("image", image), ("pin", pin)) if v is not None]
    if len(given) != 1:
        raise SearchError(f"give exactly one query (text, image or pin), got {', '.join(given) or 'none'}")
    if int(k) < 1:
        raise SearchError(f"k={k}: must be >= 1")
    ann = load_index(index_dir)
    m = ann.manifest
    which = m.get("which", "fused")
    if not m.get("embeddings"):
        raise SearchError(f"{index_dir}: the index manifest records no embedding directory (\"embeddings\"); "
                          "rebuild it with `pinclip ann-index EMB_DIR --out INDEX_DIR`")
    emb_dir = Path(m["embeddings"])
    if not (emb_dir / "manifest.json").is_file():
        raise MissingInputError(f"{emb_dir}: the embedding directory the index {index_dir} was built from is gone "
                                "(it holds the pin ids)")
    emb = load_embeddings(emb_dir)
    ext_ids = emb["pin_external_ids"]
    if len(ext_ids) != ann.ntotal:
        raise SearchError(f"{index_dir}: indexes {ann.ntotal:,} pins, its embedding directory {emb_dir} now holds "
                          f"{len(ext_ids):,} (rebuilt since?): rebuild the index")
    query: dict[str, Any]
    if pin is not None:
        row = _pin_row(ext_ids, pin)
        q = np.asarray(emb[which][row:row + 1], dtype=np.float32)
        query = {"pin": ext_ids[row]}
    else:
        enc = _encoder(model, device)
        dim = None if int(enc.embed_dim) == ann.dim else ann.dim
        if text is not None:
            q = enc.encode_text([str(text)], dim=dim)
            query = {"text": str(text)}
        else:
            path = Path(image)
            if not path.is_file():
                raise MissingInputError(f"--image {image}: no such file")
            q = enc.encode_image([path], dim=dim)
            query = {"image": str(path)}
        q = np.asarray(q.detach().cpu().numpy() if hasattr(q, "detach") else q, dtype=np.float32)
        if q.shape[-1] != ann.dim:
            raise SearchError(f"the model embeds to {q.shape[-1]} dimensions, the index holds {ann.dim}: use the "
                              "model the embeddings came from")
    query.update({"index": str(Path(index_dir)), "which": which, "k": int(k)})
    scores, ids = ann.search(q, int(k))
    features = _features(emb["manifest"], len(ext_ids))
    results = []
    for score, row in zip(scores[0].tolist(), ids[0].tolist()):
        if row < 0:
            continue
        results.append({"pin_id": ext_ids[row], "score": float(score), **_describe(features, int(row))})
    return {"query": query, "results": results}


def format_results(out: dict, width: int = 60) -> str:
    """The human-readable table of :func:`search`'s result: rank, pin id, score, text, image."""
    q = out["query"]
    kind = next(key for key in ("text", "image", "pin") if key in q)
    lines = [f"query ({kind}): {q[kind]!r} -> {q.get('which', '?')} index {q.get('index', '')}"]
    if not out["results"]:
        lines.append("no results")
        return "\n".join(lines)
    lines.append(f"{'rank':>4}  {'pin_id':<16} {'score':>7}  text / image")
    for rank, r in enumerate(out["results"], 1):
        text = r.get("text")
        shown = "" if text is None else (text if len(text) <= width else text[:width - 3] + "...")
        lines.append(f"{rank:>4}  {str(r['pin_id']):<16} {r['score']:>7.4f}  {shown}")
        if r.get("image"):
            lines.append(f"{'':>4}  {'':<16} {'':>7}  {r['image']}")
    return "\n".join(lines)
