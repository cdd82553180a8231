"""The distributed export of ``pinclip embed`` (under torchrun): shards and their merge.

Every rank embeds a contiguous, batch-aligned range of pins (:func:`shard_range`) into an atomic
shard directory ``SHARD_DIR/shard_RRRRR/`` (``image.npy``, ``text.npy``, ``fused.npy`` [n_r, D],
``image_missing.npy`` [n_r], ``manifest.json`` with the rank, world size, job token, pin range,
model, step and the byte size and CRC32 of every file); rank 0 checks every shard and merges them
(:func:`merge_shards`) into the single-process format of ``training.embed``. See that module's
docstring and ``docs/DISTRIBUTED.md``.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from graph.atomic import atomic_directory
from graph.errors import ToolkitError
from graph.storage import read_json_object
from graph.output_dir import OutputKind
from training.config import load_train_config
from training.data import prepare_graph
from training.distributed import all_gather_object, barrier, init_distributed, shutdown
from training.embed import (EMB_KEYS, EMBED_OUTPUT, VERSION, fill_embeddings, iter_pin_embeddings, load_run,
                            run_meta, write_common_files)

__all__ = ["SHARD_FORMAT", "SHARD_OUTPUT", "EmbedShardError", "shard_range", "merge_shards", "embed_distributed"]

SHARD_FORMAT = "pinclip-embeddings-shard"
# A shard directory (graph.output_dir): the export replaces only shards of its own.
SHARD_OUTPUT = OutputKind("an embedding shard", "pinclip embed (torchrun)", "manifest.json", "format", SHARD_FORMAT)
COPY_ROWS = 65536      # rows copied at a time when merging shards (bounded memory)


class EmbedShardError(ToolkitError, RuntimeError):
    """A distributed export failed: a rank's error, or a missing / partial / corrupt shard."""


def shard_range(num_pins: int, batch_size: int, rank: int, world_size: int) -> tuple[int, int]:
    """Pins ``[start, stop)`` of ``rank``: contiguous, in whole batches of ``batch_size`` (the
    batches of a single-process export, split as evenly as possible; a rank may get none)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} outside world size {world_size}")
    nb = -(-int(num_pins) // int(batch_size))
    b0, b1 = rank * nb // world_size, (rank + 1) * nb // world_size
    return min(num_pins, b0 * batch_size), min(num_pins, b1 * batch_size)


def _crc32_file(path: Path, chunk: int = 1 << 24) -> int:
    crc = 0
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


def _write_shard(shard_dir: Path, rank: int, world_size: int, job: str, start: int, stop: int, run: dict,
                 batch_size: int, dtype: str, workers: int, progress: bool) -> Path:
    """Embed pins [start, stop) into ``shard_dir/shard_RRRRR`` (atomic)."""
    model, g, cfg = run["model"], run["graph"], run["cfg"]
    n, d = stop - start, model.embed_dim
    target = shard_dir / f"shard_{rank:05d}"
    with atomic_directory(target, SHARD_OUTPUT) as tmp:
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(n, d))
                  for k in EMB_KEYS}
        missing = np.zeros(n, dtype=bool)
        batches = iter_pin_embeddings(model, run["fetcher"], torch.arange(start, stop), batch_size, run["device"],
                                      cfg.model.precision, workers, progress, desc=f"embed rank {rank}")
        fill_embeddings(arrays, missing, batches, offset=start)
        del arrays
        np.save(tmp / "image_missing.npy", missing)
        files = {f"{k}.npy": {} for k in (*EMB_KEYS, "image_missing")}
        for name, rec in files.items():
            rec.update(bytes=(tmp / name).stat().st_size, crc32=_crc32_file(tmp / name))
        manifest = {"format": SHARD_FORMAT, "version": VERSION, "job": job, "rank": rank, "world_size": world_size,
                    "start": start, "stop": stop, "num_pins": g.num_pins, "dim": d, "dtype": dtype,
                    "batch_size": batch_size, "files": files, **run_meta(run, run["run_dir"])}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def _read_shard_manifests(shard_dir: Path, world_size: int | None, job: str | None) -> list[dict]:
    if not shard_dir.is_dir():
        raise EmbedShardError(f"{shard_dir}: no shard directory")
    manifests: dict[int, dict] = {}
    for entry in sorted(shard_dir.iterdir()):
        if not entry.name.startswith("shard_"):
            continue
        mpath = entry / "manifest.json"
        if not mpath.is_file():
            raise EmbedShardError(f"{entry}: incomplete shard (no manifest.json)")
        m = read_json_object(mpath, EmbedShardError)
        if m.get("format") != SHARD_FORMAT:
            raise EmbedShardError(f"{mpath}: format {m.get('format')!r}, expected {SHARD_FORMAT!r}")
        if entry.name != f"shard_{m['rank']:05d}":
            raise EmbedShardError(f"{mpath}: says rank {m['rank']}, but the directory is {entry.name}")
        m["_dir"] = entry
        manifests[int(m["rank"])] = m
    if not manifests:
        raise EmbedShardError(f"{shard_dir}: no shards (shard_RRRRR directories)")
    first = manifests[min(manifests)]
    ws = int(world_size if world_size is not None else first["world_size"])
    job = job if job is not None else first["job"]
    for r, m in manifests.items():
        if m["world_size"] != ws or m["job"] != job:
            raise EmbedShardError(f"{m['_dir']}: from another export (world size {m['world_size']}, job {m['job']}; "
                                  f"expected {ws}, {job})")
        if r >= ws:
            raise EmbedShardError(f"{m['_dir']}: rank {r} outside world size {ws}")
    missing = sorted(set(range(ws)) - set(manifests))
    if missing:
        raise EmbedShardError(f"{shard_dir}: missing shards of rank(s) {missing} of {ws} (those ranks did not finish)")
    shards = [manifests[r] for r in range(ws)]
    for key in ("num_pins", "dim", "dtype", "model", "step", "checkpoint", "batch_size", "graph_manifest_sha256"):
        values = {json.dumps(m.get(key)) for m in shards}
        if len(values) > 1:
            raise EmbedShardError(f"{shard_dir}: shards disagree on {key}: {sorted(values)}")
    pos = 0
    for m in shards:
        if m["start"] != pos or m["stop"] < m["start"]:
            raise EmbedShardError(f"{m['_dir']}: pins [{m['start']}, {m['stop']}), expected to start at {pos}")
        pos = m["stop"]
    if pos != shards[0]["num_pins"]:
        raise EmbedShardError(f"{shard_dir}: shards cover pins [0, {pos}) of {shards[0]['num_pins']}")
    return shards


def merge_shards(shard_dir: str | os.PathLike, out: str | os.PathLike, world_size: int | None = None,
                 job: str | None = None, graph: Any = None) -> Path:
    """Check the shards of a distributed export and merge them into ``out`` (atomically; the
    format of a single-process export). Every shard must be present, from the same export
    (``job`` token, world size, model, step), cover the pins contiguously and match the byte
    size and CRC32 its manifest records; otherwise :class:`EmbedShardError` names the shard and
    file. ``graph``: the run's graph store (default: opened from the run directory the shards
    record). Returns ``out``."""
    shard_dir = Path(shard_dir)
    shards = _read_shard_manifests(shard_dir, world_size, job)
    for m in shards:  # all checks before any output is written
        for name, rec in m["files"].items():
            path = m["_dir"] / name
            if not path.is_file():
                raise EmbedShardError(f"{path}: missing")
            if path.stat().st_size != rec["bytes"]:
                raise EmbedShardError(f"{path}: {path.stat().st_size} bytes, the shard manifest says {rec['bytes']} "
                                      "(truncated or overwritten)")
            if _crc32_file(path) != rec["crc32"]:
                raise EmbedShardError(f"{path}: CRC32 mismatch (corrupt)")
    m0 = shards[0]
    p, d, dtype = int(m0["num_pins"]), int(m0["dim"]), m0["dtype"]
    if graph is None:
        run_dir = Path(m0["run_dir"])
        graph = prepare_graph(load_train_config(run_dir / "config.yaml", check_devices=False), run_dir,
                              log=lambda *_: None)
    if graph.num_pins != p:
        raise EmbedShardError(f"{shard_dir}: shards hold {p} pins, the graph store has {graph.num_pins}")
    out = Path(out)
    with atomic_directory(out, EMBED_OUTPUT) as tmp:
        missing = np.zeros(p, dtype=bool)
        for k in EMB_KEYS:
            arr = np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(p, d))
            for m in shards:
                part = np.load(m["_dir"] / f"{k}.npy", mmap_mode="r")
                n = m["stop"] - m["start"]
                if part.shape != (n, d) or part.dtype != np.dtype(dtype):
                    raise EmbedShardError(f"{m['_dir'] / (k + '.npy')}: {part.dtype} {list(part.shape)}, expected "
                                          f"{dtype} [{n}, {d}]")
                for r0 in range(0, n, COPY_ROWS):
                    arr[m["start"] + r0:m["start"] + min(n, r0 + COPY_ROWS)] = part[r0:r0 + COPY_ROWS]
                del part
            arr.flush()
            del arr
        for m in shards:
            missing[m["start"]:m["stop"]] = np.load(m["_dir"] / "image_missing.npy")
        meta = {key: m0[key] for key in ("model", "step", "checkpoint", "run_dir", "matryoshka_dims")}
        meta.update({key: m0[key] for key in ("graph_manifest_sha256", "graph_changed") if key in m0})
        write_common_files(tmp, graph, p, d, dtype, missing, {**meta, "world_size": len(shards)})
    return out


def embed_distributed(run_dir, out, checkpoint, batch_size, device, dtype, num_workers, progress, log,
                      shard_dir, allow_changed_graph=False) -> Path:
    """``training.embed.embed_run`` under torchrun: every rank embeds its shard
    (:func:`shard_range`), rank 0 merges them (:func:`merge_shards`); any rank's failure is
    raised on every rank as :class:`EmbedShardError`."""
    owns_group = not (dist.is_available() and dist.is_initialized())   # a caller's group is left alone
    info = init_distributed(device)
    main = info.is_main
    finished = False
    try:
        out = Path(out).absolute()
        job = all_gather_object(uuid.uuid4().hex[:12] if main else None, info)[0]
        keep = shard_dir is not None
        shards = Path(shard_dir).absolute() if keep else out.parent / f".{out.name}.shards-{job}"
        error = None
        try:
            run = load_run(run_dir, checkpoint, str(info.device), progress and main, log if main else (lambda *_: None),
                           is_main=main, barrier=lambda: barrier(info), allow_changed_graph=allow_changed_graph)
            run["run_dir"] = run_dir
            workers = run["cfg"].data.num_workers if num_workers is None else int(num_workers)
            start, stop = shard_range(run["graph"].num_pins, batch_size, info.rank, info.world_size)
            _write_shard(shards, info.rank, info.world_size, job, start, stop, run, batch_size, dtype, workers,
                         progress and main)
        except Exception as exc:  # reported to every rank below, so none waits forever
            error = f"{type(exc).__name__}: {exc}"
        errors = [(r, e) for r, e in enumerate(all_gather_object(error, info)) if e]
        if errors:
            raise EmbedShardError("; ".join(f"rank {r}: {e}" for r, e in errors))
        merge_error = None
        if main:
            try:
                merge_shards(shards, out, info.world_size, job, run["graph"])
                if not keep:
                    shutil.rmtree(shards, ignore_errors=True)
                log(f"merged {info.world_size} shards into {out}")
            except Exception as exc:
                merge_error = f"{type(exc).__name__}: {exc}"
        merge_error = all_gather_object(merge_error, info)[0]
        if merge_error:
            raise EmbedShardError(f"rank 0 could not merge the shards in {shards}: {merge_error}")
        finished = True
        return out
    finally:
        if owns_group:
            # Every rank got here without an error: meet at a barrier before the teardown (see
            # ``training.distributed.shutdown``).
            shutdown(info, synchronize=finished)
