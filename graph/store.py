"""``PinBoardGraph``: the bipartite Pin-Board graph store.

Pins have dense internal ids ``[0, P)`` and boards ``[0, B)``; their external ids (int64 or
strings) are kept in order and mapped both ways. Topology is CSR in both directions, with
optional per-edge float32 weights and int64 timestamps aligned to each direction. An edge's id
is its position in the pin-major CSR.

A store saved with ``save`` is a directory of memory-mapped arrays (see ``graph.storage``);
``PinBoardGraph.open`` costs the same for a thousand or a billion edges.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from graph import storage
from graph.atomic import atomic_directory
from graph.csr import BipartiteCSR, build_bipartite_csr, expand_indptr

if TYPE_CHECKING:  # pragma: no cover
    from graph.features import FeatureStore
    from graph.splits import GraphSplits

_TOPOLOGY = ("pin_indptr", "pin_indices", "board_indptr", "board_indices")
_EDGE_ATTRS = ("pin_weights", "board_weights", "pin_timestamps", "board_timestamps")


def _as_numpy_ids(values: Any, what: str) -> np.ndarray:
    """Validate a 1-D integer id array (tensor, array or sequence); int64 numpy out."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{what}: expected a 1-D array of ids, got shape {tuple(arr.shape)}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{what}: expected integer ids, got dtype {arr.dtype}")
    arr = arr.astype(np.int64, copy=False)
    neg = np.flatnonzero(arr < 0)
    if neg.size:
        i = int(neg[0])
        raise ValueError(f"{what}: negative id {int(arr[i])} at position {i}")
    return arr


def _external_id_array(values: Any, n: int, what: str) -> pa.Array:
    """External ids as an Arrow array (int64 or string), checked for length, nulls, duplicates."""
    if values is None:
        return pa.array(np.arange(n, dtype=np.int64))
    if isinstance(values, torch.Tensor):
        values = values.cpu().numpy()
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(values)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        arr = arr.cast(pa.int64())
    elif pa.types.is_large_string(arr.type) or pa.types.is_string(arr.type):
        arr = arr.cast(pa.large_string())
    else:
        raise ValueError(f"{what}: external ids must be integers or strings, got {arr.type}")
    if len(arr) != n:
        raise ValueError(f"{what}: {len(arr)} external ids for {n} nodes")
    if arr.null_count:
        i = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise ValueError(f"{what}: null external id at position {i}")
    if pc.count_distinct(arr).as_py() != n:
        counts = pc.value_counts(arr)
        dup = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise ValueError(f"{what}: duplicate external id {dup!r}")
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
          num_pins, num_boards: node counts (default: max id + 1). Ids must be in range.
          weights: float [E] or None; repeated edges are merged and their weights summed.
          timestamps: int [E] seconds or None; merged edges keep the earliest.
          pin_external_ids, board_external_ids: int64 or string ids of length P / B, unique.
        """
        pins = _as_numpy_ids(pin_ids, "pin_ids")
        boards = _as_numpy_ids(board_ids, "board_ids")
        if pins.shape != boards.shape:
            raise ValueError(f"pin_ids has {pins.shape[0]} edges but board_ids has {boards.shape[0]}")
        num_pins = cls._check_count(pins, num_pins, "pin_ids", "num_pins")
        num_boards = cls._check_count(boards, num_boards, "board_ids", "num_boards")
        w = cls._edge_values(weights, pins.shape[0], "weights", np.float32)
        t = cls._edge_values(timestamps, pins.shape[0], "timestamps", np.int64)
        if w is not None:
            bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"weights: invalid weight {w[i]} at edge {i} (must be finite and >= 0)")
        csr = build_bipartite_csr(pins, boards, num_pins, num_boards, w, t)
        return cls(csr,
                   _external_id_array(pin_external_ids, num_pins, "pin_external_ids"),
                   _external_id_array(board_external_ids, num_boards, "board_external_ids"))

    @staticmethod
    def _check_count(ids: np.ndarray, count: int | None, what: str, count_name: str) -> int:
        top = int(ids.max()) + 1 if ids.size else 0
        if count is None:
            return top
        count = int(count)
        if count < 0:
            raise ValueError(f"{count_name}={count} must be >= 0")
        if top > count:
            i = int(np.flatnonzero(ids >= count)[0])
            raise ValueError(f"{what}: id {int(ids[i])} at position {i} is out of range for {count_name}={count}")
        return count

    @staticmethod
    def _edge_values(values: Any, n: int, what: str, dtype: type) -> np.ndarray | None:
        if values is None:
            return None
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        arr = np.asarray(values)
        if arr.shape != (n,):
            raise ValueError(f"{what}: expected shape ({n},), got {tuple(arr.shape)}")
        if dtype is np.int64 and arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{what}: expected integers, got dtype {arr.dtype}")
        return arr.astype(dtype, copy=False)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, overwrite: bool = True) -> Path:
        """Write the store atomically to directory ``path`` and return it.

        An existing ``path`` is replaced only when it is a graph store (it holds a
        ``manifest.json``) or an empty directory: the swap deletes the old contents, so a typo
        such as ``--out .`` must not wipe a directory of other files.
        """
        path = Path(path)
        _check_replaceable(path)
        with atomic_directory(path, overwrite=overwrite) as tmp:
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
    def open(cls, path: str | os.PathLike, verify: str = "fast") -> "PinBoardGraph":
        """Open a saved store memory-mapped.

        ``verify``: ``"fast"`` (default: sizes, headers and CRC32 of sampled blocks; constant
        time), ``"full"`` (CRC32 of every byte plus structural invariants), or ``"none"``.
        Raises ``GraphStoreError`` naming the file at fault.
        """
        if verify not in ("fast", "full", "none"):
            raise ValueError(f"verify={verify!r}: expected 'fast', 'full' or 'none'")
        path = Path(path)
        manifest = storage.read_manifest(path)
        try:
            return cls._open(path, manifest, verify)
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
    def _open(cls, path: Path, manifest: dict[str, Any], verify: str) -> "PinBoardGraph":
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
            if ptr[0] != 0 or ptr[n] != E:
                raise storage.GraphStoreError(f"{path / (name + '.npy')}: corrupted (indptr must run from 0 to {E})")
        csr = BipartiteCSR(num_pins=P, num_boards=B, **arrays)
        if verify == "full":
            cls._check_structure(csr, path)
        g = cls(csr, pin_ids, board_ids, path=path, manifest=manifest)
        if "features" in manifest:
            from graph.features import FeatureStore
            g.features = FeatureStore.open(path, manifest["features"], verify)
            for kind, table, n in (("pins", g.features.pins, P), ("boards", g.features.boards, B)):
                if table.num_rows != n:
                    raise storage.GraphStoreError(f"{path / manifest['features'][kind]['file']}: "
                                                  f"{table.num_rows} rows for {n} {kind}")
        if "splits" in manifest:
            from graph.splits import GraphSplits
            g.splits = GraphSplits.open(path, manifest["splits"], verify)
            if g.splits.edge_split.shape != (E,):
                raise storage.GraphStoreError(f"{path / manifest['splits']['arrays']['edge_split']['file']}: "
                                              f"shape {g.splits.edge_split.shape}, expected ({E},)")
        return g

    @staticmethod
    def _check_structure(csr: BipartiteCSR, path: Path) -> None:
        for ptr_name, idx_name, bound in (("pin_indptr", "pin_indices", csr.num_boards),
                                          ("board_indptr", "board_indices", csr.num_pins)):
            ptr, idx = getattr(csr, ptr_name), getattr(csr, idx_name)
            if np.any(np.diff(ptr) < 0):
                raise storage.GraphStoreError(f"{path / (ptr_name + '.npy')}: indptr is not non-decreasing")
            if idx.size and (idx.min() < 0 or idx.max() >= bound):
                raise storage.GraphStoreError(f"{path / (idx_name + '.npy')}: index out of range [0, {bound})")

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
        return self.pin_ids.take(pa.array(_as_numpy_ids(internal, "internal pin ids"))).to_pylist()

    def external_board_ids(self, internal: Any) -> list:
        return self.board_ids.take(pa.array(_as_numpy_ids(internal, "internal board ids"))).to_pylist()

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
        from graph.interop import to_pyg
        return to_pyg(self)

    def to_scipy(self, direction: str = "pin"):
        """``scipy.sparse.csr_array`` of shape [P, B] (``direction='pin'``) or [B, P]."""
        from graph.interop import to_scipy
        return to_scipy(self, direction)

    def to_networkx(self, max_edges: int = 1_000_000):
        """``networkx.Graph`` with nodes ('pin', i) and ('board', j); refuses large graphs."""
        from graph.interop import to_networkx
        return to_networkx(self, max_edges)

    def to_dgl(self):
        """``dgl.heterograph`` (DGL is optional and imported lazily)."""
        from graph.interop import to_dgl
        return to_dgl(self)

    def __repr__(self) -> str:
        where = f", path={str(self.path)!r}" if self.path else ""
        return (f"PinBoardGraph(num_pins={self.num_pins}, num_boards={self.num_boards}, "
                f"num_edges={self.num_edges}, index_dtype={self._csr.pin_indices.dtype.name}{where})")


def _check_replaceable(path: Path) -> None:
    """Refuse to replace anything but a graph store or an empty directory (see ``save``)."""
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise storage.GraphStoreError(f"{path}: exists and is not a directory; refusing to replace it with a graph store")
    if (path / storage.MANIFEST).is_file():
        try:
            fmt = json.loads((path / storage.MANIFEST).read_text()).get("format")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return  # a damaged store: replacing it is the repair
        if fmt == storage.FORMAT_NAME:
            return
        raise storage.GraphStoreError(f"{path}: holds a manifest.json that is not a {storage.FORMAT_NAME} store; "
                              "refusing to replace it")
    if any(path.iterdir()):
        raise storage.GraphStoreError(f"{path}: exists, is not empty and is not a graph store (no manifest.json); "
                              "refusing to replace it (pick a new or empty directory)")


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
