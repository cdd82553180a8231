"""Validation of ``PinBoardGraph.from_edges`` input: id arrays, node counts, edge attributes.

Every check names the array, the position and the value at fault (``InputError``). The checks of
a large edge list are reductions (the smallest and largest id, the weights' smallest and largest
bit patterns), which :func:`graph.csr.edge_ranges` computes once, the ids and the boards on two
threads; an exact (slower) search for the position runs only when a reduction shows a problem.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from graph.csr import EdgeRanges
from graph.errors import InputError

__all__ = ["SPARSE_RATIO", "SPARSE_MIN_IDS", "INT64_MAX", "as_id_array", "check_ids", "edge_values", "check_weights",
           "refuse_sparse_ids"]

# ``from_edges`` without a node count refuses an id space this much larger than the ids it was
# given (and at least SPARSE_MIN_IDS): every node costs index memory (8 bytes of indptr, 8 of
# external id), so a single id of 2**40 would ask for ~16 TiB.
SPARSE_RATIO = 64
SPARSE_MIN_IDS = 10_000_000
# Below this many ids the sparse check counts distinct ids exactly (a sort); above, the id count
# bounds them (no extra pass over a large edge list).
_EXACT_DISTINCT_MAX = 1 << 20
INT64_MAX = np.iinfo(np.int64).max   # the largest id an int64 index holds
_FLOAT32_INF_BITS = 0x7F800000   # +inf's bits; NaNs and negative weights (sign bit set) lie above


def as_id_array(values: Any, what: str, check_negative: bool = True) -> np.ndarray:
    """A 1-D integer id array (tensor, array or sequence) as int64 numpy, checked for shape,
    dtype and int64 range (and, with ``check_negative``, for negative ids: one reduction)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise InputError(f"{what}: expected a 1-D array of ids, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what}: expected integer ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "u" and arr.dtype.itemsize == 8:
        # Checked before the cast: uint64 ids >= 2**63 would wrap around to negative int64.
        big = np.flatnonzero(arr > INT64_MAX)
        if big.size:
            i = int(big[0])
            raise InputError(f"{what}: id {int(arr[i])} at position {i} is too large (>= 2^63); "
                             "ids must fit in int64")
    arr = arr.astype(np.int64, copy=False)
    if check_negative and arr.min() < 0:  # a reduction: no temporary of the ids' size unless one is negative
        _raise_negative(arr, what)
    return arr


def _raise_negative(ids: np.ndarray, what: str) -> None:
    i = int(np.flatnonzero(ids < 0)[0])
    raise InputError(f"{what}: negative id {int(ids[i])} at position {i}")


def check_ids(ids: np.ndarray, low: int, high: int, count: int | None, what: str, count_name: str) -> int:
    """The node count of int64 ids [E] whose smallest and largest values are ``low`` and ``high``
    (any values when E == 0): ``count``, or max id + 1 when None (refusing ids that look
    sparse). Raises ``InputError`` naming the first negative or out-of-range id."""
    if ids.size and low < 0:
        _raise_negative(ids, what)
    top = high + 1 if ids.size else 0
    if count is None:
        refuse_sparse_ids(ids, top, what, count_name)
        return top
    count = int(count)
    if count < 0:
        raise InputError(f"{count_name}={count} must be >= 0")
    if top > count:
        i = int(np.flatnonzero(ids >= count)[0])
        raise InputError(f"{what}: id {int(ids[i])} at position {i} is out of range for {count_name}={count}")
    return count


def _binary_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:,.1f} {unit}"
        n /= 1024
    raise AssertionError  # pragma: no cover


def refuse_sparse_ids(ids: np.ndarray, top: int, what: str, count_name: str) -> None:
    """Raise ``InputError`` when ``top`` (max id + 1) is far beyond the ids actually used."""
    if top <= SPARSE_MIN_IDS or top <= SPARSE_RATIO * ids.size:
        if top <= SPARSE_MIN_IDS or ids.size > _EXACT_DISTINCT_MAX:
            return
        distinct = int(np.unique(ids).size)  # at most 1M ids: a millisecond-scale sort
        if top <= SPARSE_RATIO * distinct:
            return
        used = f"{distinct:,} distinct ids"
    else:
        used = f"{ids.size:,} edges (so at most {ids.size:,} distinct ids)"
    raise InputError(
        f"{what}: the largest id is {top - 1:,} but there are only {used}: with {count_name}=None "
        f"the graph would hold {top:,} nodes (~{_binary_bytes(top * 8)} of index memory at 8 bytes a node, "
        f"more with external ids). The ids look sparse: pass {count_name} explicitly if that many "
        "nodes are meant, or remap the ids to dense ones 0..N-1 (the dataset builder, "
        "graph.dataset.load_dataset_graph / `pinclip build-graph`, maps arbitrary ids to dense ones).")


def edge_values(values: Any, n: int, what: str, dtype: type) -> np.ndarray | None:
    """A per-edge attribute (tensor, array or sequence of length ``n``) as ``dtype`` numpy, or None."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.shape != (n,):
        raise InputError(f"{what}: expected shape ({n},), got {tuple(arr.shape)}")
    if dtype is np.int64 and arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"{what}: expected integers, got dtype {arr.dtype}")
    return arr.astype(dtype, copy=False)


def check_weights(w: np.ndarray, ranges: EdgeRanges) -> np.ndarray:
    """Float32 weights [E] checked finite and >= 0; returned as a stride-0 view of one value when
    ``ranges`` shows they are all equal (the build then skips its own check). The check is the
    largest bit pattern (one reduction, or ``ranges``'s); only when that is +inf's or above (a
    NaN, an infinity or a sign bit, which -0.0 has too) does an exact search for the bad weight
    run. Raises ``InputError`` naming the edge."""
    if w.size == 0:
        return w
    high = ranges.weight_bits_max if ranges.weight_bits_max is not None else int(w.view(np.uint32).max())
    if high >= _FLOAT32_INF_BITS:
        bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if bad.size:
            i = int(bad[0])
            raise InputError(f"weights: invalid weight {w[i]} at edge {i} (must be finite and >= 0)")
    if ranges.weight_bits_min is not None and ranges.weight_bits_min == high and w.size > 1:
        return np.broadcast_to(w[:1], w.shape)
    return w
