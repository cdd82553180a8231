"""Summary statistics of a ``PinBoardGraph`` (``pinclip graph-stats``).

``graph_stats`` returns a JSON-able dict; ``format_stats`` renders it as a readable table.
Connected components are counted by ``scipy.sparse.csgraph`` on the bipartite adjacency
(pins and boards together, N = P + B nodes); an isolated node is a component of its own.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from graph.storage import directory_bytes
from graph.store import PinBoardGraph, check_structure

QUANTILES = (0.5, 0.9, 0.99)


def distribution(values: np.ndarray) -> dict[str, float | int | None]:
    """min, p50, p90, p99, max and mean of an integer array (linear-interpolated quantiles)."""
    if values.size == 0:
        return {"min": None, **{f"p{round(q * 100)}": None for q in QUANTILES}, "max": None, "mean": None}
    qs = np.quantile(values, QUANTILES)
    return {"min": int(values.min()), **{f"p{round(q * 100)}": float(v) for q, v in zip(QUANTILES, qs)},
            "max": int(values.max()), "mean": float(values.mean())}


def connected_components(g: PinBoardGraph) -> tuple[int, np.ndarray]:
    """(number of components, int32 [P + B] labels); pins are nodes [0, P), boards [P, P + B).

    Raises ``GraphStoreError`` when the CSR arrays are corrupted (``graph.store.check_structure``).
    """
    # scipy.sparse.csgraph takes ~0.6 s to import: only when components are counted.
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components as cc

    P, B, E = g.num_pins, g.num_boards, g.num_edges
    n = P + B
    if n == 0:
        return 0, np.zeros(0, np.int32)
    # scipy's csgraph trusts indptr and indices: an out-of-range index in a store opened with
    # verify="none" would read out of bounds (a segfault). The check is O(E), like the count.
    check_structure(g.csr_numpy(), g.path)
    # Pin rows point at board columns shifted by P; board rows are empty. With
    # connection='weak' the directed pin -> board edges connect both ways.
    pin_indptr = g.pin_indptr.numpy()
    indptr = np.concatenate([pin_indptr, np.full(B, E, dtype=np.int64)])
    indices = g.pin_indices.numpy().astype(np.int64) + P
    adj = sp.csr_array((np.ones(E, np.int8), indices, indptr), shape=(n, n))
    count, labels = cc(adj, directed=True, connection="weak")
    return int(count), labels


def graph_stats(g: PinBoardGraph, components: bool = True) -> dict[str, Any]:
    """JSON-able statistics of ``g``.

    Keys: num_pins, num_boards, num_edges, index_dtype, has_weights, has_timestamps,
    pin_degree / board_size (min, p50, p90, p99, max, mean), isolated_pins, isolated_boards,
    weights / timestamps ranges when present, connected_components, largest_component_nodes,
    largest_component_share (of all P + B nodes), largest_component_edge_share, splits
    (counts and params) when present, and path, bytes_on_disk, bytes_per_edge when ``g`` was
    opened from a directory. ``components=False`` skips the component count (linear time).
    """
    pin_deg = g.pin_degrees().numpy()
    board_deg = g.board_degrees().numpy()
    out: dict[str, Any] = {
        "num_pins": g.num_pins,
        "num_boards": g.num_boards,
        "num_edges": g.num_edges,
        "index_dtype": str(g.pin_indices.numpy().dtype),
        "pin_id_type": str(g.pin_ids.type),
        "board_id_type": str(g.board_ids.type),
        "has_weights": g.has_weights,
        "has_timestamps": g.has_timestamps,
        "pin_degree": distribution(pin_deg),
        "board_size": distribution(board_deg),
        "isolated_pins": int((pin_deg == 0).sum()),
        "isolated_boards": int((board_deg == 0).sum()),
    }
    if g.has_weights and g.num_edges:
        w = g.pin_weights.numpy()
        out["weights"] = {"min": float(w.min()), "max": float(w.max()), "mean": float(w.mean(dtype=np.float64))}
    if g.has_timestamps and g.num_edges:
        t = g.pin_timestamps.numpy()
        out["timestamps"] = {"min": int(t.min()), "max": int(t.max())}
    if components:
        count, labels = connected_components(g)
        out["connected_components"] = count
        if count:
            sizes = np.bincount(labels)
            largest = int(sizes.argmax())
            out["largest_component_nodes"] = int(sizes[largest])
            out["largest_component_share"] = float(sizes[largest] / labels.size)
            # every edge lies inside one component: count them by their pin's label
            pin_labels = labels[:g.num_pins]
            in_largest = int(pin_deg[pin_labels == largest].sum())
            out["largest_component_edge_share"] = float(in_largest / g.num_edges) if g.num_edges else None
        else:
            out["largest_component_nodes"] = 0
            out["largest_component_share"] = None
            out["largest_component_edge_share"] = None
    if g.splits is not None:
        out["splits"] = {"counts": g.splits.counts(), "params": dict(g.splits.params)}
    if g.path is not None:
        size = directory_bytes(g.path)
        out["path"] = str(g.path)
        out["bytes_on_disk"] = size
        out["bytes_per_edge"] = float(size / g.num_edges) if g.num_edges else None
    source = g.manifest.get("source") if isinstance(g.manifest, dict) else None
    if isinstance(source, dict) and "dataset_dir" in source:
        out["source"] = source["dataset_dir"]
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return f"{v:,.3f}" if abs(v) < 1e6 else f"{v:,.0f}"
    return str(v)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def format_stats(stats: dict[str, Any]) -> str:
    """A readable, aligned text table of ``graph_stats`` output."""
    rows: list[tuple[str, str]] = []
    for key in ("num_pins", "num_boards", "num_edges", "index_dtype", "pin_id_type", "board_id_type",
                "has_weights", "has_timestamps", "isolated_pins", "isolated_boards"):
        if key in stats:
            rows.append((key.replace("_", " "), _fmt(stats[key])))
    if "weights" in stats:
        w = stats["weights"]
        rows.append(("weights min / mean / max", f"{_fmt(w['min'])} / {_fmt(w['mean'])} / {_fmt(w['max'])}"))
    if "timestamps" in stats:
        t = stats["timestamps"]
        rows.append(("timestamps min / max", f"{t['min']} / {t['max']}"))
    if "connected_components" in stats:
        rows.append(("connected components", _fmt(stats["connected_components"])))
        share = stats.get("largest_component_share")
        eshare = stats.get("largest_component_edge_share")
        rows.append(("largest component",
                     f"{_fmt(stats['largest_component_nodes'])} nodes"
                     + ("" if share is None else f" ({share:.1%} of nodes")
                     + ("" if eshare is None else f", {eshare:.1%} of edges")
                     + ("" if share is None else ")")))
    if "splits" in stats:
        c = stats["splits"]["counts"]
        rows.append(("split edges", " / ".join(f"{k} {_fmt(c[k])}" for k in ("train", "val", "test", "cold_start"))))
        rows.append(("cold-start pins", f"{_fmt(c['cold_start_pins'])} "
                     f"({stats['splits']['params'].get('cold_start_source', '?')})"))
    if "bytes_on_disk" in stats:
        rows.append(("bytes on disk", _bytes(stats["bytes_on_disk"])))
        rows.append(("bytes per edge", _fmt(stats["bytes_per_edge"])))
    for key in ("path", "source"):
        if key in stats:
            rows.append((key, str(stats[key])))
    width = max(len(k) for k, _ in rows)
    lines = [f"{k:<{width}}  {v}" for k, v in rows]

    cols = ("min", "p50", "p90", "p99", "max", "mean")
    table = [("", *cols)]
    for key, label in (("pin_degree", "pin degree"), ("board_size", "board size")):
        if key in stats:
            table.append((label, *(_fmt(stats[key][c]) for c in cols)))
    if len(table) > 1:
        widths = [max(len(r[i]) for r in table) for i in range(len(cols) + 1)]
        lines.append("")
        for r in table:
            lines.append("  ".join(f"{cell:<{widths[0]}}" if i == 0 else f"{cell:>{widths[i]}}"
                                   for i, cell in enumerate(r)))
    return "\n".join(lines)


__all__ = ["graph_stats", "format_stats", "connected_components", "distribution"]
