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
``ValueError`` naming the file, the row and the column). Reading the node tables and mapping edge
ids, shared with the out-of-core build (``graph.external_build``): ``graph.build_inputs``.

Image paths must stay inside the dataset directory: an absolute path, or one that resolves
outside it (``..`` components, symlinked files or directories; ``os.path.realpath``), is a
``DatasetError`` naming its row (``graph.features.find_unsafe_image_path``: one ``realpath`` per
distinct parent directory and one listing of it, not a ``stat`` per image). Whether each image
exists and decodes is not checked here: ``pinclip build-graph --check-images`` opens every header,
and training refuses or skips a bad image when it reads it (``data.on_bad_image``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from graph import external_build
from graph.build_inputs import NodeTable, check_fractions, cold_start_source, map_ids, read_nodes, source_record
from graph.errors import InputError
from graph.features import FeatureStore
from graph.splits import make_splits
from graph.output_dir import check_output_dir
from graph.storage import STORE_OUTPUT
from graph.store import PinBoardGraph
# DatasetError, TABLE_NAMES and find_table are part of this module's API (re-exported).
from graph.tables import TABLE_NAMES, DatasetError, TableReader, find_table


# ---------------------------------------------------------------------------- edge table (in memory)
@dataclass
class _Edges:
    path: Path
    pins: np.ndarray              # int64 [E] internal pin ids (before deduplication)
    boards: np.ndarray            # int64 [E]
    weights: np.ndarray | None    # float32 [E]
    timestamps: np.ndarray | None  # int64 [E]


def _read_edges(path: Path, pins: NodeTable, boards: NodeTable, progress: bool) -> _Edges:
    reader = TableReader(path, "edges", progress)
    has_w = any(c.name == "weight" for c in reader.present)
    has_t = any(c.name == "timestamp" for c in reader.present)
    p_chunks, b_chunks, w_chunks, t_chunks = [], [], [], []
    for offset, cols in reader.batches():
        p_chunks.append(map_ids(cols["pin_id"], pins, "pin_id", path, offset))
        b_chunks.append(map_ids(cols["board_id"], boards, "board_id", path, offset))
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
    pins = read_nodes(path, "pins", progress, check_image_paths=False)
    return PinImages(path, dataset_dir, pins.ids, pins.features.column("image").combine_chunks())


# ---------------------------------------------------------------------------- public API
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
    check_fractions(cold_start_fraction, val_fraction, test_fraction)
    dataset_dir = Path(dataset_dir)
    paths = {name: find_table(dataset_dir, name) for name in TABLE_NAMES}
    pins = read_nodes(paths["pins"], "pins", progress)
    boards = read_nodes(paths["boards"], "boards", progress)
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

    fresh, frac = cold_start_source(pins, cold_start_fraction)
    if fresh is not None:
        g.splits = make_splits(g, val_fraction, test_fraction, cold_start_fraction=0.0, seed=seed,
                               fresh_pins=fresh)
        g.splits.params["cold_start_fraction"] = None  # taken from the fresh flags, not drawn
    else:
        g.splits = make_splits(g, val_fraction, test_fraction, cold_start_fraction=frac, seed=seed)
    g.manifest["source"] = source_record(dataset_dir, paths, len(pins.ids), len(boards.ids),
                                          num_raw_edges, int(g.csr_numpy().num_duplicates))
    return g


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
    check_fractions(cold_start_fraction, val_fraction, test_fraction)
    out_dir = Path(out_dir)
    if out_dir.absolute() == Path(dataset_dir).absolute():
        raise InputError(f"{out_dir}: the graph store cannot replace its own dataset directory")
    check_output_dir(out_dir, STORE_OUTPUT)  # fail before the (long) read, not after it
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
