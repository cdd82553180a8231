"""On-disk layout of a graph store: raw ``.npy`` arrays + Arrow IPC tables + ``manifest.json``.

The manifest is written last, inside a temporary sibling directory that is renamed into place
(see ``graph.atomic``), so a directory with a manifest is always a finished store. Arrays are
memory-mapped; the checks here read the manifest, every file's size and ``.npy`` header, and a
fixed number of sampled blocks whose CRC32 the manifest records (constant time whatever the
graph size); ``verify="full"`` re-checksums every byte. A damaged byte outside the sampled
blocks passes these checks: ``graph.store.check_structure`` (run by the default open) is what
keeps a corrupted index from being used.
"""
from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from graph.errors import ToolkitError
from graph.output_dir import OutputKind

FORMAT_NAME = "pinclip-graph"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"

SAMPLE_BLOCK = 64 * 1024
SAMPLE_BLOCKS = 16
_CHUNK = 16 * 1024 * 1024


class GraphStoreError(ToolkitError, ValueError):
    """A graph store on disk is missing, truncated, corrupted or of an unknown format."""


# The graph store as an output directory (graph.output_dir): what build-graph may replace.
STORE_OUTPUT = OutputKind("a graph store", "pinclip build-graph", MANIFEST, "format", FORMAT_NAME)


def _sample_offsets(size: int) -> list[int]:
    """Start offsets of the blocks checked at open time (the whole file when it is small)."""
    if size <= SAMPLE_BLOCK * SAMPLE_BLOCKS:
        return list(range(0, size, SAMPLE_BLOCK))
    last = size - SAMPLE_BLOCK
    return sorted({int(round(i * last / (SAMPLE_BLOCKS - 1))) for i in range(SAMPLE_BLOCKS)})


def sampled_crc32(path: Path, size: int) -> int:
    crc = 0
    with open(path, "rb") as fh:
        for off in _sample_offsets(size):
            fh.seek(off)
            crc = zlib.crc32(fh.read(SAMPLE_BLOCK), crc)
    return crc


def full_crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return crc


def file_record(path: Path) -> dict[str, Any]:
    size = path.stat().st_size
    return {"bytes": size, "crc32": full_crc32(path), "sample_crc32": sampled_crc32(path, size)}


def write_array(directory: Path, name: str, array: np.ndarray) -> dict[str, Any]:
    """Save ``array`` as ``NAME.npy`` and return its manifest record."""
    array = np.ascontiguousarray(array)
    path = directory / f"{name}.npy"
    np.save(path, array, allow_pickle=False)
    rec = {"file": path.name, "dtype": array.dtype.str, "shape": list(array.shape)}
    rec.update(file_record(path))
    return rec


def write_table(directory: Path, name: str, table: pa.Table) -> dict[str, Any]:
    """Save an Arrow table as an uncompressed IPC file (memory-mappable) and return its record."""
    path = directory / f"{name}.arrow"
    with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    rec = {"file": path.name, "num_rows": table.num_rows, "schema": [f.name for f in table.schema]}
    rec.update(file_record(path))
    return rec


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    manifest = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **manifest}
    path = directory / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def read_json_object(path: Path, error: type[Exception]) -> dict[str, Any]:
    """The JSON object in the manifest file ``path``; ``error`` naming the file when it is not
    UTF-8 JSON or not an object. Shared by every directory format with a manifest (graph stores,
    ANN indexes, embedding shards); each checks its own ``format`` key."""
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise error(f"{path}: corrupted manifest ({exc})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: corrupted manifest (expected a JSON object, got {type(data).__name__})")
    return data


def read_manifest(directory: Path) -> dict[str, Any]:
    path = directory / MANIFEST
    if not directory.is_dir():
        raise GraphStoreError(f"{directory}: no such graph store directory")
    if not path.is_file():
        raise GraphStoreError(f"{path}: missing; {directory} is not a finished graph store "
                              "(an interrupted build never leaves one)")
    manifest = read_json_object(path, GraphStoreError)
    if manifest.get("format") != FORMAT_NAME:
        raise GraphStoreError(f"{path}: not a {FORMAT_NAME} manifest (format={manifest.get('format')!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise GraphStoreError(f"{path}: format_version {version!r} is not supported "
                              f"(this toolkit reads version {FORMAT_VERSION})")
    return manifest


def check_file(directory: Path, rec: dict[str, Any], verify: str) -> Path:
    """Size and checksum checks of one stored file; raises GraphStoreError naming it."""
    name = rec["file"]
    # A record may only name a plain file inside the store: a manifest must never make us
    # read (or checksum) a path outside the directory.
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise GraphStoreError(f"{directory / MANIFEST}: invalid file name {name!r} in a record")
    path = directory / name
    if not path.is_file():
        raise GraphStoreError(f"{path}: missing from graph store")
    size = path.stat().st_size
    if size != rec["bytes"]:
        raise GraphStoreError(f"{path}: truncated or resized ({size} bytes, manifest says {rec['bytes']})")
    if verify == "full":
        if full_crc32(path) != rec["crc32"]:
            raise GraphStoreError(f"{path}: corrupted (CRC32 mismatch)")
    elif verify == "fast":
        if sampled_crc32(path, size) != rec["sample_crc32"]:
            raise GraphStoreError(f"{path}: corrupted (CRC32 mismatch in sampled blocks)")
    return path


def open_array(directory: Path, rec: dict[str, Any], verify: str) -> np.ndarray:
    """Memory-map one array (copy-on-write, so torch can wrap it without copying)."""
    path = check_file(directory, rec, verify)
    try:
        array = np.load(path, mmap_mode="c", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise GraphStoreError(f"{path}: unreadable .npy array ({exc})") from None
    if array.dtype.str != rec["dtype"] or list(array.shape) != rec["shape"]:
        raise GraphStoreError(f"{path}: header says {array.dtype.str}{list(array.shape)}, "
                              f"manifest says {rec['dtype']}{rec['shape']}")
    return array


def open_table(directory: Path, rec: dict[str, Any], verify: str) -> pa.Table:
    """Memory-map one Arrow IPC table (zero-copy)."""
    path = check_file(directory, rec, verify)
    try:
        table = ipc.open_file(pa.memory_map(str(path), "r")).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise GraphStoreError(f"{path}: unreadable Arrow table ({exc})") from None
    if table.num_rows != rec["num_rows"]:
        raise GraphStoreError(f"{path}: {table.num_rows} rows, manifest says {rec['num_rows']}")
    return table


def directory_bytes(directory: str | os.PathLike) -> int:
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
