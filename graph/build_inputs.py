"""What the in-memory build (``graph.dataset``) and the out-of-core build (``graph.external_build``)
share: reading the node tables (``read_nodes``), mapping an edge table's external ids to internal
ids (``map_ids``), checking the split fractions, choosing the cold-start pins and the manifest's
``source`` record. Both builds import this module; neither imports the other's internals.

Column types and validation are ``graph.tables``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from graph.errors import InputError
from graph.features import BOARD_COLUMNS, PIN_COLUMNS, find_unsafe_image_path
from graph.tables import (DEFAULT_COLD_START_FRACTION, DatasetError, TableReader, check_nonnegative,
                          first_failing)

__all__ = ["NodeTable", "read_nodes", "map_ids", "check_fractions", "cold_start_source", "source_record"]


# ---------------------------------------------------------------------------- node tables and edge ids
@dataclass
class NodeTable:
    path: Path
    ids: pa.Array                 # int64 or large_string [N], unique, in row order
    features: pa.Table            # feature columns [N]
    has_fresh: bool = False
    _int_index: tuple[np.ndarray, np.ndarray | None] | None = None

    def int_index(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(sorted int64 ids, row of each sorted id) or (ids, None) when ids are 0..N-1 in order."""
        if self._int_index is None:
            ids = self.ids.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
            if np.array_equal(ids, np.arange(ids.shape[0], dtype=np.int64)):
                self._int_index = (ids, None)
            else:
                order = np.argsort(ids, kind="stable")
                self._int_index = (ids[order], order)
        return self._int_index


def _finish_ids(chunks: list[pa.Array], reader: TableReader, col: str) -> pa.Array:
    """Concatenate id batches, infer the CSV id type, reject negative and duplicate ids."""
    ids = pa.chunked_array(chunks, type=chunks[0].type).combine_chunks()
    if reader.is_csv:
        try:
            ids = pc.cast(ids, pa.int64())  # every id is an integer: int64 ids
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            _warn_if_int64_overflow(ids, reader.path, col)  # some id is not an int64: string ids
    if pa.types.is_integer(ids.type):
        check_nonnegative(ids, col, reader.path, 0)
    if _has_duplicates(ids):
        # dictionary codes give the first occurrence of every value; the earliest row that is
        # not a first occurrence is the first duplicate.
        codes = np.asarray(pc.dictionary_encode(ids).indices, dtype=np.int64)
        _, first = np.unique(codes, return_index=True)
        is_first = np.zeros(len(ids), dtype=bool)
        is_first[first] = True
        row = int(np.flatnonzero(~is_first)[0])
        prev = int(first[codes[row]])  # codes are 0..k-1 in order of first appearance
        raise DatasetError(reader.path, f"duplicate {col} {ids[row].as_py()!r} (first at row {prev})", row, col)
    return ids


_INTEGER_TEXT = r"^-?[0-9]+$"


def _warn_if_int64_overflow(ids: pa.Array, path: Path, col: str) -> None:
    """CSV ids that are all integers but do not all fit int64 become string ids: say so, since
    ``007`` and ``7`` are then different ids (error path only: one regex pass)."""
    if not pc.all(pc.match_substring_regex(ids, _INTEGER_TEXT)).as_py():
        return
    i, v, _ = first_failing(ids, lambda v: pc.cast(pa.array([v], pa.large_string()), pa.int64()))
    warnings.warn(f"{path}: row {i} (0-based data row), column {col!r}: {col} {v} is too large for "
                  f"int64 (>= 2^63 in magnitude), so every {col} of this table is read as a string "
                  "('007' and '7' are then different ids)", stacklevel=4)


def _has_duplicates(ids: pa.Array) -> bool:
    """Whether any id repeats. Integer ids: dense ``0..N-1`` in order is checked first, else a
    sorted copy (8 bytes an id); ``pc.count_distinct``'s hash table took 1.6 GB for 10M ids."""
    if not pa.types.is_integer(ids.type):
        return pc.count_distinct(ids).as_py() != len(ids)
    v = ids.to_numpy(zero_copy_only=False)
    if v.shape[0] < 2 or (v[0] == 0 and np.all(v[1:] - v[:-1] == 1)):
        return False
    v = np.sort(v)
    return bool(np.any(v[1:] == v[:-1]))


def read_nodes(path: Path, table: str, progress: bool, check_image_paths: bool = True) -> NodeTable:
    reader = TableReader(path, table, progress)
    id_col = "pin_id" if table == "pins" else "board_id"
    feature_types = PIN_COLUMNS if table == "pins" else BOARD_COLUMNS
    chunks: dict[str, list[pa.Array]] = {id_col: [], **{k: [] for k in feature_types}}
    for _offset, cols in reader.batches():
        n = len(cols[id_col])
        for name, typ in feature_types.items():
            arr = cols.get(name)
            if arr is None:
                arr = pa.array(np.zeros(n, bool)) if typ == pa.bool_() else pa.nulls(n, typ)
            chunks[name].append(arr.cast(typ))
        chunks[id_col].append(cols[id_col])
    ids = _finish_ids(chunks[id_col], reader, id_col)
    features = pa.table({name: pa.chunked_array(chunks[name], type=typ).combine_chunks()
                         for name, typ in feature_types.items()})
    if table == "pins" and check_image_paths:
        _check_image_paths(features.column("image"), path)
    return NodeTable(path, ids, features, has_fresh=any(c.name == "fresh" for c in reader.present))


def _check_image_paths(images: pa.ChunkedArray, pins_path: Path) -> None:
    """Image paths must stay inside the dataset directory (the pins table's directory), with
    symlinks resolved: an absolute path or one that escapes is a ``DatasetError`` naming its row.
    Whether each file exists and decodes is ``pinclip build-graph --check-images``'s job."""
    bad = find_unsafe_image_path(images, pins_path.parent)
    if bad is not None:
        row, value, problem = bad
        raise DatasetError(pins_path, f"image path {value!r} {problem}", row, "image")


def map_ids(arr: pa.Array, nodes: NodeTable, col: str, path: Path, offset: int) -> np.ndarray:
    """External edge ids -> internal int64 ids via ``pc.index_in``; unknown ids are errors."""
    target = nodes.ids.type
    if arr.type != target:
        try:
            arr = pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            i, v, _ = first_failing(arr, lambda v: pc.cast(pa.array([v], arr.type), target))
            if isinstance(v, str) and re.fullmatch(_INTEGER_TEXT, v):
                raise DatasetError(path, f"{col} {v} is too large (>= 2^63 in magnitude); it cannot be "
                                   f"one of {nodes.path.name}'s integer ids (int64)", offset + i, col) from None
            raise DatasetError(path, f"unknown {col} {v!r} ({nodes.path.name} has integer ids)", offset + i, col) from None
        if pa.types.is_integer(arr.type):
            check_nonnegative(arr, col, path, offset)
    if pa.types.is_integer(target):
        return _map_int_ids(arr, nodes, col, path, offset)
    pos = pc.index_in(arr, value_set=nodes.ids)
    if pos.null_count:
        i = int(np.flatnonzero(np.asarray(pos.is_null()))[0])
        raise DatasetError(path, f"unknown {col} {arr[i].as_py()!r} (not in {nodes.path.name})", offset + i, col)
    return np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)


def _map_int_ids(arr: pa.Array, nodes: NodeTable, col: str, path: Path, offset: int) -> np.ndarray:
    """Integer ids: identity when the node table lists 0..N-1 in order, else a binary search.

    ``pc.index_in`` rebuilds its hash table on every call (every batch), which dominated the
    10M-edge build; a sorted index built once per node table avoids that.
    """
    if arr.null_count:
        i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise DatasetError(path, f"null {col}", offset + i, col)
    values = arr.to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
    sorted_ids, order = nodes.int_index()
    if order is None:  # ids are exactly 0..N-1 in row order
        pos = values
        bad = (pos < 0) | (pos >= sorted_ids.shape[0])
    else:
        pos = np.searchsorted(sorted_ids, values)
        pos_c = np.minimum(pos, sorted_ids.shape[0] - 1)
        bad = sorted_ids[pos_c] != values
        pos = order[pos_c]
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DatasetError(path, f"unknown {col} {int(values[i])!r} (not in {nodes.path.name})", offset + i, col)
    return pos



# ---------------------------------------------------------------------------- build options and record
def check_fractions(cold_start_fraction: float | None, val_fraction: float, test_fraction: float) -> None:
    # Checked before reading, so a typo does not cost a full read of a big dataset.
    for name, v in (("cold_start_fraction", cold_start_fraction), ("val_fraction", val_fraction),
                    ("test_fraction", test_fraction)):
        if v is not None and not 0.0 <= float(v) < 1.0:
            raise InputError(f"{name}={v} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be < 1")


def cold_start_source(pins: NodeTable, cold_start_fraction: float | None) -> tuple[np.ndarray | None, float]:
    """(fresh flags bool [P], 0.0) when the pins' ``fresh`` column picks the cold-start pins,
    else (None, the share of pins to draw)."""
    if cold_start_fraction is None and pins.has_fresh:
        return np.asarray(pins.features.column("fresh").to_numpy(zero_copy_only=False), dtype=bool), 0.0
    return None, DEFAULT_COLD_START_FRACTION if cold_start_fraction is None else float(cold_start_fraction)


def source_record(dataset_dir: Path, paths: dict[str, Path], num_pins: int, num_boards: int,
                   num_raw_edges: int, num_duplicates: int) -> dict[str, Any]:
    """The manifest's ``source`` entry (shared by the in-memory and the out-of-core build)."""
    return {
        "dataset_dir": str(dataset_dir.absolute()),
        "tables": {name: p.name for name, p in paths.items()},
        "rows": {"pins": num_pins, "boards": num_boards, "edges": num_raw_edges},
        "duplicate_edges_merged": num_duplicates,
        # e.g. the synthetic world's ground truth, which evaluation reads from the dataset dir
        "truth_files": sorted(p.name for p in dataset_dir.glob("truth_*") if p.is_file()),
    }
