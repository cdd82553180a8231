"""Build a ``PinBoardGraph`` from a dataset directory (the format of DESIGN.md).

A dataset directory holds three tables, each ``NAME.parquet`` or ``NAME.csv`` (exactly one of
the two):

  pins    pin_id (int or string, unique), text (string, nullable), image (path relative to the
          directory, nullable), optional fresh (bool: a cold-start pin)
  boards  board_id (int or string, unique), name (string, nullable)
  edges   pin_id, board_id; optional weight (float >= 0), timestamp (int seconds)

Other columns and other files (such as the synthetic world's ``truth_pins.parquet``) are
ignored; the dataset directory is recorded in the store manifest (``source``) so evaluation can
find them. Internal ids follow row order: the ``i``-th data row of ``pins`` is pin ``i``.

Reading is streamed in batches (Parquet ``iter_batches``, CSV ``open_csv``), so beyond the
feature columns (which the store keeps anyway) memory is bounded by the edge arrays.

Column types and validation: ``graph.tables`` (every problem raises ``DatasetError``, a
``ValueError`` naming the file, the row and the column).

Image paths must stay inside the dataset directory: an absolute path, or one that resolves
outside it (``..`` components, symlinked files or directories; ``os.path.realpath``), is a
``DatasetError`` naming its row (``graph.features.find_unsafe_image_path``: one ``realpath`` per
distinct parent directory and one listing of it, not a ``stat`` per image). Whether each image
exists and decodes is not checked here: ``pinclip build-graph --check-images`` opens every header,
and training refuses or skips a bad image when it reads it (``data.on_bad_image``).
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

from graph.features import BOARD_COLUMNS, PIN_COLUMNS, FeatureStore, find_unsafe_image_path
from graph.errors import InputError
from graph.splits import make_splits
from graph.output_dir import check_output_dir
from graph.storage import STORE_OUTPUT
from graph.store import PinBoardGraph
# DatasetError, TABLE_NAMES and find_table are part of this module's API (re-exported).
from graph.tables import (DEFAULT_COLD_START_FRACTION, TABLE_NAMES, DatasetError, _check_nonnegative, _first_failing,
                          _TableReader, find_table)


# ---------------------------------------------------------------------------- node and edge tables
@dataclass
class _Nodes:
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


def _finish_ids(chunks: list[pa.Array], reader: _TableReader, col: str) -> pa.Array:
    """Concatenate id batches, infer the CSV id type, reject negative and duplicate ids."""
    ids = pa.chunked_array(chunks, type=chunks[0].type).combine_chunks()
    if reader.is_csv:
        try:
            ids = pc.cast(ids, pa.int64())  # every id is an integer: int64 ids
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            _warn_if_int64_overflow(ids, reader.path, col)  # some id is not an int64: string ids
    if pa.types.is_integer(ids.type):
        _check_nonnegative(ids, col, reader.path, 0)
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
    i, v, _ = _first_failing(ids, lambda v: pc.cast(pa.array([v], pa.large_string()), pa.int64()))
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


def _read_nodes(path: Path, table: str, progress: bool, check_image_paths: bool = True) -> _Nodes:
    reader = _TableReader(path, table, progress)
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
    return _Nodes(path, ids, features, has_fresh=any(c.name == "fresh" for c in reader.present))


def _check_image_paths(images: pa.ChunkedArray, pins_path: Path) -> None:
    """Image paths must stay inside the dataset directory (the pins table's directory), with
    symlinks resolved: an absolute path or one that escapes is a ``DatasetError`` naming its row.
    Whether each file exists and decodes is ``pinclip build-graph --check-images``'s job."""
    bad = find_unsafe_image_path(images, pins_path.parent)
    if bad is not None:
        row, value, problem = bad
        raise DatasetError(pins_path, f"image path {value!r} {problem}", row, "image")


def _map_ids(arr: pa.Array, nodes: _Nodes, col: str, path: Path, offset: int) -> np.ndarray:
    """External edge ids -> internal int64 ids via ``pc.index_in``; unknown ids are errors."""
    target = nodes.ids.type
    if arr.type != target:
        try:
            arr = pc.cast(arr, target)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            i, v, _ = _first_failing(arr, lambda v: pc.cast(pa.array([v], arr.type), target))
            if isinstance(v, str) and re.fullmatch(_INTEGER_TEXT, v):
                raise DatasetError(path, f"{col} {v} is too large (>= 2^63 in magnitude); it cannot be "
                                   f"one of {nodes.path.name}'s integer ids (int64)", offset + i, col) from None
            raise DatasetError(path, f"unknown {col} {v!r} ({nodes.path.name} has integer ids)", offset + i, col) from None
        if pa.types.is_integer(arr.type):
            _check_nonnegative(arr, col, path, offset)
    if pa.types.is_integer(target):
        return _map_int_ids(arr, nodes, col, path, offset)
    pos = pc.index_in(arr, value_set=nodes.ids)
    if pos.null_count:
        i = int(np.flatnonzero(np.asarray(pos.is_null()))[0])
        raise DatasetError(path, f"unknown {col} {arr[i].as_py()!r} (not in {nodes.path.name})", offset + i, col)
    return np.asarray(pos.to_numpy(zero_copy_only=False), dtype=np.int64)


def _map_int_ids(arr: pa.Array, nodes: _Nodes, col: str, path: Path, offset: int) -> np.ndarray:
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


@dataclass
class _Edges:
    path: Path
    pins: np.ndarray              # int64 [E] internal pin ids (before deduplication)
    boards: np.ndarray            # int64 [E]
    weights: np.ndarray | None    # float32 [E]
    timestamps: np.ndarray | None  # int64 [E]


def _read_edges(path: Path, pins: _Nodes, boards: _Nodes, progress: bool) -> _Edges:
    reader = _TableReader(path, "edges", progress)
    has_w = any(c.name == "weight" for c in reader.present)
    has_t = any(c.name == "timestamp" for c in reader.present)
    p_chunks, b_chunks, w_chunks, t_chunks = [], [], [], []
    for offset, cols in reader.batches():
        p_chunks.append(_map_ids(cols["pin_id"], pins, "pin_id", path, offset))
        b_chunks.append(_map_ids(cols["board_id"], boards, "board_id", path, offset))
        if has_w:  # float32 already here: range-checked above, and half the memory
            w_chunks.append(cols["weight"].to_numpy(zero_copy_only=False).astype(np.float32))
        if has_t:
            t_chunks.append(cols["timestamp"].to_numpy(zero_copy_only=False).astype(np.int64, copy=False))
    cat = np.concatenate
    return _Edges(path, cat(p_chunks), cat(b_chunks), cat(w_chunks) if has_w else None,
                  cat(t_chunks) if has_t else None)


@dataclass
class PinImages:
    """The image column of a dataset's pins table, for checking the images themselves.

    table: the pins table file; root: the dataset directory image paths are relative to;
    pin_ids: external pin ids, int64 or large_string [P]; images: large_string [P] (null where
    a pin has no image). Row ``i`` is pin ``i`` (internal ids follow row order).
    """
    table: Path
    root: Path
    pin_ids: pa.Array
    images: pa.Array


def read_pin_images(dataset_dir: str | Path, progress: bool = False) -> PinImages:
    """Read the pins table of ``dataset_dir`` (checked as the build checks it, except that image
    paths are not checked here: the caller reports every bad path, not just the first)."""
    dataset_dir = Path(dataset_dir)
    path = find_table(dataset_dir, "pins")
    pins = _read_nodes(path, "pins", progress, check_image_paths=False)
    return PinImages(path, dataset_dir, pins.ids, pins.features.column("image").combine_chunks())


# ---------------------------------------------------------------------------- public API
def _check_fractions(cold_start_fraction: float | None, val_fraction: float, test_fraction: float) -> None:
    # Checked before reading, so a typo does not cost a full read of a big dataset.
    for name, v in (("cold_start_fraction", cold_start_fraction), ("val_fraction", val_fraction),
                    ("test_fraction", test_fraction)):
        if v is not None and not 0.0 <= float(v) < 1.0:
            raise InputError(f"{name}={v} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise InputError(f"val_fraction + test_fraction = {val_fraction + test_fraction} must be < 1")


def load_dataset_graph(dataset_dir: str | Path, cold_start_fraction: float | None = None,
                       val_fraction: float = 0.05, test_fraction: float = 0.05, seed: int = 0,
                       progress: bool = False) -> PinBoardGraph:
    """Read a dataset directory into an in-memory ``PinBoardGraph`` with features and splits.

    Args:
      dataset_dir: directory with ``pins``, ``boards``, ``edges`` (``.parquet`` or ``.csv``).
      cold_start_fraction: None to use the pins' ``fresh`` column as the cold-start pins (when
        the column exists; otherwise a random 0.1 of the pins with edges); a float in [0, 1) to
        draw that share of pins at random instead.
      val_fraction, test_fraction: share of warm edges held out (see ``graph.splits``).
      seed: seed of the random splits.
      progress: show a tqdm progress bar per table on stderr.

    Returns a graph whose internal ids follow row order, with ``features`` (text, image, fresh;
    board name; ``root`` = the dataset directory), ``splits`` and ``manifest['source']``.
    Raises ``DatasetError`` naming file, row and column on bad input.
    """
    _check_fractions(cold_start_fraction, val_fraction, test_fraction)
    dataset_dir = Path(dataset_dir)
    paths = {name: find_table(dataset_dir, name) for name in TABLE_NAMES}
    pins = _read_nodes(paths["pins"], "pins", progress)
    boards = _read_nodes(paths["boards"], "boards", progress)
    edges = _read_edges(paths["edges"], pins, boards, progress)
    try:
        g = PinBoardGraph.from_edges(edges.pins, edges.boards, num_pins=len(pins.ids),
                                     num_boards=len(boards.ids), weights=edges.weights,
                                     timestamps=edges.timestamps, pin_external_ids=pins.ids,
                                     board_external_ids=boards.ids)
    except ValueError as exc:  # pragma: no cover - every input rule is checked above
        raise DatasetError(edges.path, str(exc)) from None
    num_raw_edges = len(edges.pins)
    del edges
    root = dataset_dir.absolute()
    g.features = FeatureStore(pins.features, boards.features, root=root)

    fresh, frac = _cold_start_source(pins, cold_start_fraction)
    if fresh is not None:
        g.splits = make_splits(g, val_fraction, test_fraction, cold_start_fraction=0.0, seed=seed,
                               fresh_pins=fresh)
        g.splits.params["cold_start_fraction"] = None  # taken from the fresh flags, not drawn
    else:
        g.splits = make_splits(g, val_fraction, test_fraction, cold_start_fraction=frac, seed=seed)
    g.manifest["source"] = _source_record(dataset_dir, paths, len(pins.ids), len(boards.ids),
                                          num_raw_edges, int(g.csr_numpy().num_duplicates))
    return g


def _cold_start_source(pins: _Nodes, cold_start_fraction: float | None) -> tuple[np.ndarray | None, float]:
    """(fresh flags bool [P], 0.0) when the pins' ``fresh`` column picks the cold-start pins,
    else (None, the share of pins to draw)."""
    if cold_start_fraction is None and pins.has_fresh:
        return np.asarray(pins.features.column("fresh").to_numpy(zero_copy_only=False), dtype=bool), 0.0
    return None, DEFAULT_COLD_START_FRACTION if cold_start_fraction is None else float(cold_start_fraction)


def _source_record(dataset_dir: Path, paths: dict[str, Path], num_pins: int, num_boards: int,
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


def build_graph_from_dataset(dataset_dir: str | Path, out_dir: str | Path,
                             cold_start_fraction: float | None = None, val_fraction: float = 0.05,
                             test_fraction: float = 0.05, seed: int = 0,
                             progress: bool = True,
                             memory_budget: int | str | None = None) -> PinBoardGraph:
    """Read a dataset directory and write its graph store to ``out_dir`` atomically.

    The store is built in a temporary sibling and swapped into place, so on any failure
    ``out_dir`` is left as it was (the in-memory build reads and checks everything before it
    writes; the out-of-core build writes into the temporary sibling as it reads). Returns the store opened (memory-mapped) from ``out_dir``.
    Arguments as ``load_dataset_graph``, plus:

      memory_budget: bytes (an int, or a string such as ``"2GB"``, see
        ``graph.external_build.parse_bytes``) the build may keep resident. When given, the
        store is built out of core (``graph.external_build``: edges bucketed on disk and
        sorted bucket by bucket). When None, the in-memory build is used unless the edges
        file is at least ``external_build.AUTO_EXTERNAL_BYTES`` (1 GiB) on disk, which is then
        built out of core with ``external_build.DEFAULT_MEMORY_BUDGET``. Both builds write
        byte-identical stores.
    """
    _check_fractions(cold_start_fraction, val_fraction, test_fraction)
    out_dir = Path(out_dir)
    if out_dir.absolute() == Path(dataset_dir).absolute():
        raise InputError(f"{out_dir}: the graph store cannot replace its own dataset directory")
    check_output_dir(out_dir, STORE_OUTPUT)  # fail before the (long) read, not after it
    from graph import external_build

    # All three tables first, in the in-memory reader's order, so a missing one is reported alike.
    edges_path = [find_table(dataset_dir, name) for name in TABLE_NAMES][-1]
    budget = external_build.choose_memory_budget(edges_path, memory_budget)
    if budget is not None:
        external_build.build_graph_external(
            dataset_dir, out_dir, cold_start_fraction=cold_start_fraction, val_fraction=val_fraction,
            test_fraction=test_fraction, seed=seed, progress=progress, memory_budget=budget)
        return PinBoardGraph.open(out_dir)
    g = load_dataset_graph(dataset_dir, cold_start_fraction=cold_start_fraction,
                           val_fraction=val_fraction, test_fraction=test_fraction, seed=seed,
                           progress=progress)
    g.save(out_dir)
    return PinBoardGraph.open(out_dir)


__all__ = ["DatasetError", "PinImages", "build_graph_from_dataset", "load_dataset_graph", "read_pin_images",
           "find_table", "TABLE_NAMES"]
