"""``PinBoardGraph``: the bipartite Pin-Board graph store.

Pins have dense internal ids ``[0, P)`` and boards ``[0, B)``; their external ids (int64 or
strings) are kept in order and mapped both ways. Topology is CSR in both directions, with
optional per-edge float32 weights and int64 timestamps aligned to each direction. An edge's id
is its position in the pin-major CSR.

A store saved with ``save`` is a directory of memory-mapped arrays (see ``graph.storage``).
``PinBoardGraph.open`` maps them without reading them; its default check reads the four CSR
arrays once to prove indexing them is safe (``check_structure``: O(E), sequential; 10M edges
about 5 ms and 100M about 50 ms from the page cache, ``benchmarks/bench_store_open.py``), and
``verify="none"`` skips that.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graph import storage
from graph.atomic import atomic_directory
from graph.csr import BipartiteCSR, build_bipartite_csr, edge_ranges, expand_indptr, find_structure_problem
from graph.csr_direction import arange_prefaulted
from graph.edge_checks import INT64_MAX, as_id_array, check_ids, check_weights, edge_values
from graph.errors import InputError
from graph.features import FeatureStore
from graph.interop import to_dgl, to_networkx, to_pyg, to_scipy
from graph.splits import GraphSplits

_TOPOLOGY = ("pin_indptr", "pin_indices", "board_indptr", "board_indices")
_EDGE_ATTRS = ("pin_weights", "board_weights", "pin_timestamps", "board_timestamps")


def _external_id_array(values: Any, n: int, what: str) -> pa.Array:
    """External ids as an Arrow array (int64 or string), checked for length, nulls, duplicates."""
    if values is None:
        return pa.array(arange_prefaulted(n))
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        if pa.types.is_uint64(arr.type) and len(arr) and pc.max(arr).as_py() > INT64_MAX:
            i = int(np.flatnonzero(np.asarray(pc.greater(arr, pa.scalar(INT64_MAX, pa.uint64())).fill_null(False)))[0])
            raise InputError(f"{what}: external id {arr[i].as_py()} at position {i} is too large (>= 2^63); "
                             "integer ids must fit in int64 (or pass them as strings)")
        arr = arr.cast(pa.int64())
    elif pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type):
        arr = arr.cast(pa.large_string())
    else:
        raise InputError(f"{what}: external ids must be integers or strings, got {arr.type}")
    if len(arr) != n:
        raise InputError(f"{what}: {len(arr)} external ids for {n} nodes")
    if arr.null_count:
        i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise InputError(f"{what}: null external id at position {i}")
    if pc.count_distinct(arr).as_py() != n:
        counts = pc.value_counts(arr)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise InputError(f"{what}: duplicate external id {dup!r}")
    return arr


class PinBoardGraph:
    """Bipartite Pin-Board graph with CSR in both directions.

    Attributes (torch tensors sharing memory with the numpy arrays or memory maps):
      pin_indptr    int64 [P + 1]; pin_indices   int32|int64 [E]: boards of each pin, ascending
      board_indptr  int64 [B + 1]; board_indices int32|int64 [E]: pins of each board, ascending
      pin_weights / board_weights        float32 [E] or None, aligned with the indices above
      pin_timestamps / board_timestamps  int64 [E] or None
    """

    def __init__(self, csr: BipartiteCSR, pin_ids: pa.Array | None = None,
                 board_ids: pa.Array | None = None, path: Path | None = None,
                 manifest: dict[str, Any] | None = None) -> None:
        self._csr = csr
        self.num_pins = int(csr.num_pins)
        self.num_boards = int(csr.num_boards)
        self.num_edges = int(csr.num_edges)
        self.pin_ids = pin_ids if pin_ids is not None else pa.array(np.arange(self.num_pins, dtype=np.int64))
        self.board_ids = board_ids if board_ids is not None else pa.array(np.arange(self.num_boards, dtype=np.int64))
        self.path = path
        self.manifest = manifest or {}
        self.features: FeatureStore | None = None
        self.splits: GraphSplits | None = None
        for name in _TOPOLOGY + _EDGE_ATTRS:
            arr = getattr(csr, name)
            setattr(self, name, None if arr is None else torch.from_numpy(arr))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(cls, pin_ids: Any, board_ids: Any, num_pins: int | None = None,
                   num_boards: int | None = None, weights: Any = None, timestamps: Any = None,
                   pin_external_ids: Any = None, board_external_ids: Any = None) -> "PinBoardGraph":
        """Build from an edge list of dense internal ids (tensors, arrays or sequences).

        Args:
          pin_ids, board_ids: integer [E]; edge ``i`` links pin ``pin_ids[i]`` to board ``board_ids[i]``.
          num_pins, num_boards: node counts (default: max id + 1). Ids must be in range. Without
            a count, ids that look sparse (max id + 1 over ``SPARSE_MIN_IDS`` and over
            ``SPARSE_RATIO`` (``graph.edge_checks``) times the number of distinct ids) raise ``InputError`` instead of
            allocating index arrays for every id up to the largest.
          weights: float [E] or None; repeated edges are merged and their weights summed.
          timestamps: int [E] seconds or None; merged edges keep the earliest.
          pin_external_ids, board_external_ids: int64 or string ids of length P / B, unique.
        """
        pins = as_id_array(pin_ids, "pin_ids", check_negative=False)
        boards = as_id_array(board_ids, "board_ids", check_negative=False)
        if pins.shape != boards.shape:
            raise InputError(f"pin_ids has {pins.shape[0]} edges but board_ids has {boards.shape[0]}")
        w = edge_values(weights, pins.shape[0], "weights", np.float32)
        t = edge_values(timestamps, pins.shape[0], "timestamps", np.int64)
        ranges = edge_ranges(pins, boards, w)   # every reduction the checks need, in one pass where it pays
        num_pins = check_ids(pins, ranges.pin_min, ranges.pin_max, num_pins, "pin_ids", "num_pins")
        num_boards = check_ids(boards, ranges.board_min, ranges.board_max, num_boards, "board_ids", "num_boards")
        if w is not None:
            w = check_weights(w, ranges)
        csr = build_bipartite_csr(pins, boards, num_pins, num_boards, w, t)
        return cls(csr,
                   _external_id_array(pin_external_ids, num_pins, "pin_external_ids"),
                   _external_id_array(board_external_ids, num_boards, "board_external_ids"))

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the store atomically to directory ``path`` and return it.

        An existing ``path`` is replaced only when it is a graph store (it holds a
        ``manifest.json``) or an empty directory: the swap deletes the old contents, so a typo
        such as ``--out .`` must not wipe a directory of other files.
        """
        path = Path(path)
        with atomic_directory(path, storage.STORE_OUTPUT, overwrite=overwrite) as tmp:
            self.write_into(tmp)
        return path

    def write_into(self, directory: Path, extra_manifest: dict[str, Any] | None = None) -> None:
        """Write every file of the store into an existing (temporary) directory, manifest last."""
        arrays = {}
        for name in _TOPOLOGY + _EDGE_ATTRS:
            arr = getattr(self._csr, name)
            if arr is not None:
                arrays[name] = storage.write_array(directory, name, arr)
        tables = {
            "pin_ids": storage.write_table(directory, "pin_ids", pa.table({"id": self.pin_ids})),
            "board_ids": storage.write_table(directory, "board_ids", pa.table({"id": self.board_ids})),
        }
        manifest: dict[str, Any] = {
            "num_pins": self.num_pins,
            "num_boards": self.num_boards,
            "num_edges": self.num_edges,
            "index_dtype": self._csr.pin_indices.dtype.name,
            "has_weights": self._csr.pin_weights is not None,
            "has_timestamps": self._csr.pin_timestamps is not None,
            "pin_id_type": str(self.pin_ids.type),
            "board_id_type": str(self.board_ids.type),
            "arrays": arrays,
            "tables": tables,
        }
        if self.features is not None:
            manifest["features"] = self.features.write_into(directory)
        if self.splits is not None:
            manifest["splits"] = self.splits.write_into(directory)
        for key, value in (extra_manifest or {}).items():
            manifest.setdefault(key, value)
        for key in ("source",):
            if key in self.manifest and key not in manifest:
                manifest[key] = self.manifest[key]
        storage.write_manifest(directory, manifest)

    @classmethod
    def open(cls, path: str | os.PathLike, verify: str = "fast",
             image_root: str | os.PathLike | None = None) -> "PinBoardGraph":
        """Open a saved store memory-mapped.

        ``image_root``: the dataset directory the pins' image paths are relative to, when it is
        no longer where the store recorded it (default None: the recorded place, relative to the
        store first, so a store that moved together with its dataset keeps working; see
        ``graph.features``). A root that does not exist raises ``graph.features.ImageRootError``
        when the first image is asked for (``g.features.check_image_root()`` asks up front).

        ``verify``:
          ``"fast"`` (default): sizes, ``.npy`` headers, CRC32 of sampled blocks, and the CSR
            structure (see ``check_structure``: each indptr runs from 0 to E without
            decreasing, every index lies in range), so a corrupted index outside the sampled
            blocks fails here instead of crashing a sampler or ``graph-stats`` later. The
            structure check reads the four topology arrays once, sequentially, in chunks:
            O(E) (timed by ``benchmarks/bench_store_open.py``).
          ``"full"``: CRC32 of every byte, then the same structure check.
          ``"none"``: sizes and headers only (constant time); a corrupted index is then
            caught only by the code that reads it: ``graph_stats`` runs ``check_structure``
            before scipy reads the arrays, the samplers' torch indexing raises ``IndexError``
            on CPU.
        Raises ``GraphStoreError`` naming the file at fault.
        """
        if verify not in ("fast", "full", "none"):
            raise InputError(f"verify={verify!r}: expected 'fast', 'full' or 'none'")
        path = Path(path)
        manifest = storage.read_manifest(path)
        try:
            return cls._open(path, manifest, verify, image_root)
        except storage.GraphStoreError:
            raise
        except KeyError as exc:
            raise storage.GraphStoreError(f"{path / storage.MANIFEST}: missing key {exc}") from None
        except (TypeError, AttributeError, IndexError, ValueError) as exc:
            # A manifest that parses as JSON but has the wrong shape (a list where a record
            # belongs, a string count, ...): name the manifest rather than crash deep inside.
            raise storage.GraphStoreError(f"{path / storage.MANIFEST}: malformed manifest "
                                          f"({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _open(cls, path: Path, manifest: dict[str, Any], verify: str,
              image_root: str | os.PathLike | None = None) -> "PinBoardGraph":
        arrays = {name: storage.open_array(path, rec, verify) for name, rec in manifest["arrays"].items()}
        pin_ids = storage.open_table(path, manifest["tables"]["pin_ids"], verify).column("id").combine_chunks()
        board_ids = storage.open_table(path, manifest["tables"]["board_ids"], verify).column("id").combine_chunks()
        P, B, E = (int(manifest[k]) for k in ("num_pins", "num_boards", "num_edges"))
        unknown = sorted(set(arrays) - set(_TOPOLOGY + _EDGE_ATTRS))
        if unknown:
            raise storage.GraphStoreError(f"{path / storage.MANIFEST}: unknown array {unknown[0]!r}")
        if len(pin_ids) != P or len(board_ids) != B:
            raise storage.GraphStoreError(f"{path / storage.MANIFEST}: {len(pin_ids)} pin ids and "
                                          f"{len(board_ids)} board ids for {P} pins and {B} boards")
        missing = [n for n in _TOPOLOGY if n not in arrays]
        if missing:
            raise storage.GraphStoreError(f"{path / storage.MANIFEST}: no record for {missing[0]}.npy")
        for a, b in (("pin_weights", "board_weights"), ("pin_timestamps", "board_timestamps")):
            if (a in arrays) != (b in arrays):
                have, lack = (a, b) if a in arrays else (b, a)
                raise storage.GraphStoreError(f"{path / storage.MANIFEST}: has {have}.npy but no record for {lack}.npy")
        expect = {"pin_indptr": (P + 1,), "board_indptr": (B + 1,), "pin_indices": (E,), "board_indices": (E,)}
        for name, arr in arrays.items():
            shape = expect.get(name, (E,))
            if arr.shape != shape:
                raise storage.GraphStoreError(f"{path / (name + '.npy')}: shape {arr.shape}, expected {shape}")
        for name, n in (("pin_indptr", P), ("board_indptr", B)):
            ptr = arrays[name]
            if ptr[0] != 0 or ptr[n] != E:  # O(1): checked whatever ``verify`` says
                raise _corrupted(path / (name + ".npy"), f"indptr runs from {int(ptr[0])} to {int(ptr[n])}; "
                                 f"it must run from 0 to {E}", verify, on_disk=True)
        csr = BipartiteCSR(num_pins=P, num_boards=B, **arrays)
        if verify != "none":
            check_structure(csr, path, verify)
        g = cls(csr, pin_ids, board_ids, path=path, manifest=manifest)
        if "features" in manifest:
            g.features = FeatureStore.open(path, manifest["features"], verify, image_root)
            for kind, table, n in (("pins", g.features.pins, P), ("boards", g.features.boards, B)):
                if table.num_rows != n:
                    raise storage.GraphStoreError(f"{path / manifest['features'][kind]['file']}: "
                                                  f"{table.num_rows} rows for {n} {kind}")
        if "splits" in manifest:
            g.splits = GraphSplits.open(path, manifest["splits"], verify)
            if g.splits.edge_split.shape != (E,):
                raise storage.GraphStoreError(f"{path / manifest['splits']['arrays']['edge_split']['file']}: "
                                              f"shape {g.splits.edge_split.shape}, expected ({E},)")
        return g

    def check_structure(self) -> None:
        """Raise ``GraphStoreError`` when a CSR array breaks an invariant indexing relies on
        (see the module function ``check_structure``); O(E), sequential."""
        check_structure(self._csr, self.path)

    # ------------------------------------------------------------------ queries
    @property
    def index_dtype(self) -> torch.dtype:
        return self.pin_indices.dtype

    @property
    def has_weights(self) -> bool:
        return self.pin_weights is not None

    @property
    def has_timestamps(self) -> bool:
        return self.pin_timestamps is not None

    def pin_degrees(self) -> torch.Tensor:
        """int64 [P]: number of boards of each pin."""
        return self.pin_indptr[1:] - self.pin_indptr[:-1]

    def board_degrees(self) -> torch.Tensor:
        """int64 [B]: number of pins of each board."""
        return self.board_indptr[1:] - self.board_indptr[:-1]

    def boards_of(self, pin: int) -> torch.Tensor:
        """Board ids of one pin (ascending), a view into ``pin_indices``."""
        return self.pin_indices[self.pin_indptr[pin]:self.pin_indptr[pin + 1]]

    def pins_of(self, board: int) -> torch.Tensor:
        """Pin ids of one board (ascending), a view into ``board_indices``."""
        return self.board_indices[self.board_indptr[board]:self.board_indptr[board + 1]]

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(pins int64 [E], boards int64 [E]) in edge-id (pin-major) order."""
        pins = torch.from_numpy(expand_indptr(self._csr.pin_indptr))
        return pins, self.pin_indices.long()

    def csr_numpy(self) -> BipartiteCSR:
        """The underlying numpy (possibly memory-mapped) arrays."""
        return self._csr

    def to(self, device: str | torch.device) -> dict[str, torch.Tensor]:
        """The four CSR tensors (and weights, when present) on ``device``, for samplers."""
        out = {name: getattr(self, name).to(device) for name in _TOPOLOGY}
        for name in ("pin_weights", "board_weights"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name).to(device)
        return out

    # ------------------------------------------------------------------ id maps
    def pin_index(self, external_ids: Sequence[Any] | pa.Array) -> np.ndarray:
        """Internal ids (int64) of external pin ids; KeyError naming the first unknown one."""
        return _lookup(self.pin_ids, external_ids, "pin")

    def board_index(self, external_ids: Sequence[Any] | pa.Array) -> np.ndarray:
        """Internal ids (int64) of external board ids; KeyError naming the first unknown one."""
        return _lookup(self.board_ids, external_ids, "board")

    def external_pin_ids(self, internal: Any) -> list:
        return self.pin_ids.take(pa.array(as_id_array(internal, "internal pin ids"))).to_pylist()

    def external_board_ids(self, internal: Any) -> list:
        return self.board_ids.take(pa.array(as_id_array(internal, "internal board ids"))).to_pylist()

    # ------------------------------------------------------------------ subgraphs
    def edge_subgraph(self, edge_mask: Any) -> "PinBoardGraph":
        """A new in-memory graph with the same nodes and ids, keeping edges where mask is True.

        ``edge_mask``: bool [E] in edge-id (pin-major) order. Features are shared; splits dropped.
        """
        mask = edge_mask.cpu().numpy() if isinstance(edge_mask, torch.Tensor) else np.asarray(edge_mask)
        if mask.shape != (self.num_edges,) or mask.dtype != bool:
            raise ValueError(f"edge_mask: expected bool [{self.num_edges}], got {mask.dtype}{list(mask.shape)}")
        pins = expand_indptr(self._csr.pin_indptr)[mask]
        boards = np.asarray(self._csr.pin_indices)[mask].astype(np.int64)
        w = None if self._csr.pin_weights is None else np.asarray(self._csr.pin_weights)[mask]
        t = None if self._csr.pin_timestamps is None else np.asarray(self._csr.pin_timestamps)[mask]
        csr = build_bipartite_csr(pins, boards, self.num_pins, self.num_boards, w, t)
        g = PinBoardGraph(csr, self.pin_ids, self.board_ids)
        g.features = self.features
        return g

    def train_graph(self) -> "PinBoardGraph":
        """The graph a sampler may see during training: only edges of the train split.

        Cold-start pins' edges and held-out (val/test) edges are removed.
        """
        if self.splits is None:
            raise ValueError("this graph has no splits; build it with splits (graph.splits.make_splits)")
        return self.edge_subgraph(self.splits.train_edge_mask())

    # ------------------------------------------------------------------ interop
    def to_pyg(self):
        """``torch_geometric.data.HeteroData`` with ('pin','saved_to','board') and its reverse."""
        return to_pyg(self)

    def to_scipy(self, direction: str = "pin"):
        """``scipy.sparse.csr_array`` of shape [P, B] (``direction='pin'``) or [B, P]."""
        return to_scipy(self, direction)

    def to_networkx(self, max_edges: int = 1_000_000):
        """``networkx.Graph`` with nodes ('pin', i) and ('board', j); refuses large graphs."""
        return to_networkx(self, max_edges)

    def to_dgl(self):
        """``dgl.heterograph`` (DGL is optional and imported lazily)."""
        return to_dgl(self)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return (f"PinBoardGraph(num_pins={self.num_pins}, num_boards={self.num_boards}, "
                f"num_edges={self.num_edges}, index_dtype={self._csr.pin_indices.dtype.name}{where})")


def check_structure(csr: BipartiteCSR, path: Path | None = None, verify: str | None = None) -> None:
    """Raise ``GraphStoreError`` at the first CSR invariant ``csr`` breaks, in either direction.

    The invariants are what indexing relies on: ``pin_indptr`` / ``board_indptr`` start at 0,
    never decrease and end at E; ``pin_indices`` lie in ``[0, num_boards)`` and
    ``board_indices`` in ``[0, num_pins)`` (``graph.csr.find_structure_problem``). The message
    names the file (``path / NAME.npy``, or the array name for an in-memory graph) and the first
    bad position. ``verify``: the check the store was opened with, to suggest the next step.
    """
    for ptr_name, idx_name, bound in (("pin_indptr", "pin_indices", csr.num_boards),
                                      ("board_indptr", "board_indices", csr.num_pins)):
        found = find_structure_problem(getattr(csr, ptr_name), getattr(csr, idx_name), bound)
        if found is None:
            continue
        name = ptr_name if found.array == "indptr" else idx_name
        where = path / (name + ".npy") if path is not None else name
        raise _corrupted(where, found.problem, verify, on_disk=path is not None)


def _corrupted(where: Path | str, problem: str, verify: str | None, on_disk: bool) -> storage.GraphStoreError:
    """The error of a CSR array that breaks an invariant, with what to do next."""
    if verify == "full":
        hint = ("its checksums match the manifest, so the store was written this way: rebuild it "
                "with `pinclip build-graph`")
    elif on_disk:
        hint = ('open it with verify="full" (`--verify full` on the command line) to checksum every '
                "byte, and rebuild it with `pinclip build-graph`")
    else:
        hint = "the graph's arrays were modified after it was built"
    return storage.GraphStoreError(f"{where}: corrupted graph store: {problem}; {hint}")


def _lookup(ids: pa.Array, query: Sequence[Any] | pa.Array, kind: str) -> np.ndarray:
    if isinstance(query, torch.Tensor):
        query = query.cpu().numpy()
    q = query if isinstance(query, pa.Array) else pa.array(query)
    try:
        q = q.cast(ids.type)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise KeyError(f"{kind} ids of type {q.type} cannot match stored ids of type {ids.type}") from None
    pos = pc.index_in(q, value_set=ids)
    if pos.null_count:
        i = int(np.flatnonzero(np.asarray(pos.is_null()))[0])
        raise KeyError(f"unknown {kind} id {q[i].as_py()!r} (position {i})")
    return np.asarray(pos, dtype=np.int64)
