"""Per-query scores behind the headline metrics: ``DIR/per_query.npz`` next to ``evaluation.json``.

Two methods are compared pair-wise on the same queries (``training.evaluation.significance``),
so evaluation keeps, for every headline metric it computed, the query pins and each query's
value; the metric is the mean of those values:

* ``board_recall@10`` / ``cold_start_board_recall@10``: 1.0 when >= 1 board mate is in the top
  10, else 0.0, per query pin of the TEST / COLD edges (pins with >= 1 positive);
* ``board_mrr``: the tie-aware reciprocal rank of the first board mate, same queries;
* ``t2i_recall@10`` / ``i2t_recall@10``: hit of pin p's image (text) in the top 10 of pin p's
  text (image), per pin with both;
* ``cold_start_t2i_recall@10`` / ``cold_start_i2t_recall@10``: the same among cold-start pins;
* ``t2i_topic_precision@10``: the share of the top-10 images of pin p's caption whose pin has
  p's hidden topic (synthetic world only).

File layout (``numpy.savez``, written atomically): for each metric ``M``, ``M::pins`` int64 [Q]
(internal pin ids of the graph store, sorted ascending) and ``M::values`` float64 [Q]. Metrics a
method cannot compute are absent, never filled in.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import numpy as np

from graph.atomic import atomic_write_bytes

__all__ = ["PER_QUERY_FILE", "PER_QUERY_METRICS", "save_per_query", "load_per_query"]

PER_QUERY_FILE = "per_query.npz"
# The metrics whose per-query values are kept, in table order.
PER_QUERY_METRICS = ("board_recall@10", "cold_start_board_recall@10", "board_mrr", "t2i_recall@10",
                     "i2t_recall@10", "cold_start_t2i_recall@10", "cold_start_i2t_recall@10",
                     "t2i_topic_precision@10")
_SEP = "::"


def save_per_query(path: str | os.PathLike, per_query: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Path:
    """Write ``{metric: (pins int64 [Q], values float [Q])}`` to ``path`` (a ``.npz``) atomically.
    Queries are stored sorted by pin id; raises ValueError on a length mismatch or duplicate pins."""
    arrays = {}
    for metric, (pins, values) in per_query.items():
        pins = np.asarray(pins, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if pins.shape != values.shape:
            raise ValueError(f"per-query {metric!r}: {pins.size} pins but {values.size} values")
        order = np.argsort(pins, kind="stable")
        pins, values = pins[order], values[order]
        if pins.size > 1 and bool((np.diff(pins) == 0).any()):
            raise ValueError(f"per-query {metric!r}: a query pin appears twice")
        arrays[f"{metric}{_SEP}pins"] = pins
        arrays[f"{metric}{_SEP}values"] = values
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_per_query(path: str | os.PathLike) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{metric: (pins int64 [Q], values float64 [Q])}`` from a file of :func:`save_per_query`
    (or from ``DIR/per_query.npz`` when ``path`` is a directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / PER_QUERY_FILE
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with np.load(path) as z:
        names = sorted({k.rsplit(_SEP, 1)[0] for k in z.files if _SEP in k})
        for m in names:
            out[m] = (z[f"{m}{_SEP}pins"].astype(np.int64), z[f"{m}{_SEP}values"].astype(np.float64))
    return out
