"""Training checkpoints: atomic, verified, and complete enough for an exact resume.

Files, in ``RUN_DIR/checkpoints/``::

    step_00000100.pt     torch.save of the training state (loaded with weights_only=True)
    step_00000100.json   its record: step, size and sha256 of the .pt (written after it)

A checkpoint is written to a temporary sibling, fsynced and renamed into place; its record is
written the same way afterwards, and only then are old checkpoints pruned. A checkpoint counts
only once its record exists, so a process killed at any instant leaves either the previous
checkpoint or the new one, never a half-written file that a resume would read. On resume the
newest record is taken and the file is checked against its size and sha256: any mismatch, an
unreadable file, another format version, or a state that does not fit the model (missing or
extra keys, other shapes) raises :class:`CheckpointError` naming the file and the problem; a
resume never silently falls back to a fresh start or to an older checkpoint.

A checkpoint is loaded with ``weights_only=True``: a file holding pickled objects (class
instances, functions) is refused as unsafe, never loaded with the unsafe fallback torch suggests.

The graph store a run trained on is identified in ``RUN_DIR/graph_identity.json`` (sha256 of
its ``manifest.json`` and its split parameters, :func:`graph_identity`); resume, embed and
evaluate refuse a store that changed since (:func:`check_graph_identity`), since its held-out
edges may then be training edges.

The state (``Trainer.state_dict``): step, the model's *trainable* parameters and buffers (frozen
towers are rebuilt from their pretrained weights; a digest of them is stored and checked),
optimizer, scheduler, loader position and RNG states of every rank, the non-finite-step counters
and the resolved config.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from graph.atomic import atomic_write_bytes, fsync_path
from graph.errors import ToolkitError

__all__ = ["CheckpointError", "capture_rng", "restore_rng", "frozen_digest", "save_checkpoint", "load_checkpoint", "list_checkpoints", "latest_checkpoint",
           "model_state", "load_model_state", "FORMAT", "VERSION", "GraphChangedError", "graph_identity",
           "write_graph_identity", "read_graph_identity", "check_graph_identity", "GRAPH_IDENTITY_FILE"]

FORMAT = "pinclip-train-checkpoint"
VERSION = 1
_NAME = re.compile(r"^step_(\d{8,})\.json$")


class CheckpointError(ToolkitError, RuntimeError):
    """A checkpoint is missing, corrupt or incompatible; the message names the file."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def checkpoint_dir(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, record path) of every published checkpoint, oldest first."""
    d = checkpoint_dir(run_dir)
    if not d.is_dir():
        return []
    out = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The record (``step_N.json``) of the newest published checkpoint, or None."""
    items = list_checkpoints(run_dir)
    return items[-1][1] if items else None


def save_checkpoint(run_dir: str | os.PathLike, step: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, publish it, prune to ``keep``.
    Returns the record path."""
    d = checkpoint_dir(run_dir)
    d.mkdir(parents=True, exist_ok=True)
    name = f"step_{step:08d}"
    target = d / f"{name}.pt"
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.pt.tmp-", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save({"format": FORMAT, "version": VERSION, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
        fsync_path(d)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    record = {"format": FORMAT, "version": VERSION, "step": int(step), "file": target.name,
              "bytes": target.stat().st_size, "sha256": _sha256(target)}
    record_path = d / f"{name}.json"
    atomic_write_bytes(record_path, (json.dumps(record, indent=2) + "\n").encode())
    _prune(d, keep)
    return record_path


def _prune(d: Path, keep: int) -> None:
    published = sorted((int(m.group(1)), p) for p in d.iterdir() if (m := _NAME.match(p.name)))
    keep_names = set()
    for _, rec in published[-keep:]:
        keep_names |= {rec.name, rec.with_suffix(".pt").name}
    for p in d.iterdir():
        # Old checkpoints, unpublished .pt files (a writer killed before its record) and
        # temporaries of killed writers. Only the training process writes here.
        if p.name in keep_names:
            continue
        if p.suffix in (".pt", ".json") or ".tmp-" in p.name:
            try:
                p.unlink()
            except FileNotFoundError:
                pass


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a checkpoint from its record (``step_N.json``), its ``.pt`` file, or a run directory
    (the newest). Verifies size and sha256 against the record. Raises :class:`CheckpointError`."""
    path = Path(path)
    if path.is_dir():
        rec = latest_checkpoint(path)
        if rec is None:
            raise CheckpointError(f"{path}: no checkpoint (no checkpoints/step_*.json)")
        path = rec
    if path.suffix == ".pt":
        path = path.with_suffix(".json")
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint record") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable checkpoint record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} record")
    if record.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {record.get('version')!r}, this code reads {VERSION}")
    pt = path.parent / str(record.get("file"))
    if not pt.is_file():
        raise CheckpointError(f"{pt}: checkpoint file missing (its record {path.name} exists)")
    size = pt.stat().st_size
    if size != record.get("bytes"):
        raise CheckpointError(f"{pt}: corrupt checkpoint: {size} bytes, its record says {record.get('bytes')}")
    digest = _sha256(pt)
    if digest != record.get("sha256"):
        raise CheckpointError(f"{pt}: corrupt checkpoint: sha256 {digest[:16]}... does not match its record "
                              f"({str(record.get('sha256'))[:16]}...)")
    try:
        state = torch.load(pt, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling problem is a corrupt file to the user
        raise _load_error(pt, exc) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise CheckpointError(f"{pt}: not a {FORMAT} v{VERSION} checkpoint")
    if state.get("step") != record.get("step"):
        raise CheckpointError(f"{pt}: holds step {state.get('step')} but its record says {record.get('step')}")
    state["_path"] = str(pt)
    return state


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _load_error(pt: Path, exc: Exception) -> CheckpointError:
    """The CheckpointError for a ``torch.load(weights_only=True)`` failure.

    torch refuses a pickled object (a class instance, a function) under ``weights_only=True`` with
    a message advising ``weights_only=False``, which would run whatever code the file holds: that
    advice is not passed on. The message names the first refused object when torch does."""
    text = str(exc)
    if isinstance(exc, pickle.UnpicklingError) or "weights_only" in text:
        found = _UNSAFE_GLOBAL.search(text)
        what = f" (e.g. {found.group(1)})" if found else ""
        return CheckpointError(f"{pt}: refused for safety: it holds Python objects that are not plain tensors, "
                               f"numbers, strings or containers{what}; unpickling them could run arbitrary code. "
                               "Training checkpoints hold only plain data: was this file written by another "
                               "program?")
    return CheckpointError(f"{pt}: cannot load checkpoint: {type(exc).__name__}: {text}")


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters and all buffers (frozen parameters are rebuilt, not stored)."""
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k not in frozen}


def load_model_state(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load :func:`model_state` output; every trainable key must be present with its shape."""
    own = model.state_dict()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    expected = set(own) - frozen
    missing = sorted(expected - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(k for k in set(state) & set(own) if tuple(state[k].shape) != tuple(own[k].shape))
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} keys this model lacks (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} shape mismatches (e.g. {k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
    if problems:
        raise CheckpointError(f"{source}: incompatible with the model: " + "; ".join(problems)
                              + " (was the model config changed?)")
    model.load_state_dict(state, strict=False)


# ------------------------------------------------------------------ the graph store a run used
GRAPH_IDENTITY_FILE = "graph_identity.json"
GRAPH_IDENTITY_FORMAT = "pinclip-graph-identity"


class GraphChangedError(ToolkitError, ValueError):
    """The graph store a run or baseline was made on has changed since (rebuilt with another
    split, another dataset...): its held-out edges may now be training edges. The message names
    the recorded and the current identity and what to do."""


def graph_identity(graph_path: str | os.PathLike) -> dict[str, Any]:
    """The identity of the graph store at ``graph_path``: {"format", "graph": absolute path,
    "manifest_sha256": sha256 hex of its ``manifest.json`` bytes (the manifest records the size
    and CRC32 of every array, so any rebuilt content changes it), "split_params": the manifest's
    ``splits.params`` (how the held-out edges were drawn) or None}."""
    path = Path(graph_path).absolute()
    data = (path / "manifest.json").read_bytes()
    try:
        splits = json.loads(data).get("splits") or {}
    except ValueError:
        splits = {}
    return {"format": GRAPH_IDENTITY_FORMAT, "graph": str(path), "manifest_sha256": hashlib.sha256(data).hexdigest(),
            "split_params": splits.get("params") if isinstance(splits, dict) else None}


def write_graph_identity(run_dir: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """Record ``identity`` (:func:`graph_identity`) as ``RUN_DIR/graph_identity.json``."""
    path = Path(run_dir) / GRAPH_IDENTITY_FILE
    atomic_write_bytes(path, (json.dumps(identity, indent=2) + "\n").encode())
    return path


def read_graph_identity(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The identity a run recorded when it started, or None (a run made before runs recorded it)."""
    path = Path(run_dir) / GRAPH_IDENTITY_FILE
    if not path.is_file():
        return None
    try:
        identity = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable graph identity record ({exc})") from None
    if not isinstance(identity, dict) or "manifest_sha256" not in identity:
        raise CheckpointError(f"{path}: not a {GRAPH_IDENTITY_FORMAT} record")
    return identity


def check_graph_identity(recorded: dict[str, Any] | None, graph_path: str | os.PathLike, what: str, remedy: str,
                         allow_changed: bool = False, log=None) -> dict[str, Any] | None:
    """Compare the store at ``graph_path`` with the identity ``recorded`` for ``what`` (e.g.
    "run runs/demo"). Returns None when it is unchanged or nothing was recorded (``log`` gets a
    one-line note then); {"recorded": ..., "current": ...} when it changed and ``allow_changed``;
    otherwise raises :class:`GraphChangedError` naming both and ``remedy`` (what to do)."""
    if recorded is None:
        if log is not None:
            log(f"{what}: no record of the graph store it was made on (made before runs recorded it); "
                f"not checked that {graph_path} is unchanged")
        return None
    current = graph_identity(graph_path)
    if current["manifest_sha256"] == recorded.get("manifest_sha256"):
        return None
    change = {"recorded": {k: recorded.get(k) for k in ("graph", "manifest_sha256", "split_params")},
              "current": {k: current[k] for k in ("graph", "manifest_sha256", "split_params")}}
    if allow_changed:
        if log is not None:
            log(f"{what}: the graph store {current['graph']} changed since (allowed): the held-out edges may "
                "be training edges")
        return change
    raise GraphChangedError(f"{what}: the graph store changed since it was recorded: {_describe_change(change)}. "
                            f"Its held-out edges may now be training edges. {remedy}")


def _describe_change(change: dict[str, Any]) -> str:
    """A change as text, e.g. ``store P: manifest sha256 A... recorded, B... now; split params:
    seed 0 recorded, 3 now`` (only the split parameters that differ)."""
    rec, cur = change["recorded"], change["current"]
    where = (f"store {cur['graph']}" if rec.get("graph") in (None, cur["graph"])
             else f"store {rec.get('graph')} recorded, {cur['graph']} now")
    text = (f"{where}: manifest sha256 {str(rec.get('manifest_sha256'))[:16]}... recorded, "
            f"{cur['manifest_sha256'][:16]}... now")
    rp, cp = rec.get("split_params"), cur.get("split_params")
    if isinstance(rp, dict) and isinstance(cp, dict):
        differ = [f"{k} {rp.get(k)!r} recorded, {cp.get(k)!r} now" for k in sorted(set(rp) | set(cp))
                  if rp.get(k) != cp.get(k)]
        return text + "; split params: " + ("; ".join(differ) if differ else f"the same ({rp})")
    return text + f"; split params {rp} recorded, {cp} now"


def capture_rng(device: torch.device) -> dict:
    """Every global RNG state a resumed run must restore: torch (and CUDA on ``device``), numpy,
    Python's ``random``; JSON-friendly except the torch tensors."""
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": random.getstate()}


def restore_rng(state: dict, device: torch.device) -> None:
    """Put back the states :func:`capture_rng` returned."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def frozen_digest(model: torch.nn.Module) -> str:
    """sha256 of the frozen (non-trainable) parameters: a checkpoint only resumes on the same frozen towers."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            t = p.detach().cpu().contiguous().reshape(-1)
            h.update(name.encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
