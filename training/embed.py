"""Embeddings of every pin from a trained run: ``pinclip embed RUN_DIR --out DIR``.

Output directory (written atomically with ``graph.atomic.atomic_directory``; every array is a
``.npy`` file that ``np.load(..., mmap_mode="r")`` memory-maps)::

    image.npy            float32|float16 [P, D]  image-only embeddings (L2-normalized)
    text.npy             float32|float16 [P, D]  text-only embeddings
    fused.npy            float32|float16 [P, D]  fused (image + text) embeddings
    pin_ids.npy          int64 [P]               internal pin ids (row i = pin i)
    pin_external_ids.arrow                       Arrow IPC file, column ``pin_id``: the dataset's ids
    image_missing.npy    bool [P]                pins without an image (zero image was encoded)
    cold_start.npy       bool [P]                cold-start pins (not seen in training)
    manifest.json        shapes, dtype, model, checkpoint step, run directory, the sha256 of the
                         graph store's manifest the pins come from (``graph_manifest_sha256``)

Pins are encoded in batches (``--batch-size``) through DataLoader workers (image decode with the
*eval* transform: resize + center crop, no augmentation), with a progress bar. A pin without an
image is encoded from the zero image; one without text from the empty caption.
:func:`load_embeddings` opens the directory again.

**Any dataset's pins** (``pinclip embed RUN_DIR|MODEL_DIR --dataset DIR``, ``training.embed_dataset``):
every pin of a dataset directory (README "The dataset format"; e.g. pins that arrived after
training) is read with the graph package's readers (``graph.build_inputs.read_nodes``: types,
unique ids, image paths inside the directory) and embedded the same way, with a run's model or a
model directory (``pinclip export``, ``pinclip.load``); no graph store is built. Same files;
``cold_start.npy`` is the dataset's ``fresh`` column (all False without one) and
``manifest.json`` adds ``"source": "dataset"``, ``"dataset"`` and ``"run_dir"`` or ``"model_dir"``.

The run's graph store must be the one it trained on (``RUN_DIR/graph_identity.json``, see
``training.checkpoint.check_graph_identity``): a store rebuilt since (another split, another
dataset) is refused unless ``allow_changed_graph=True`` (``--allow-changed-graph``), which the
manifest then records as ``graph_changed``.

**Under torchrun** (``WORLD_SIZE`` > 1, any number of nodes and processes; see
``docs/DISTRIBUTED.md``; the code is ``training.embed_shards``) every rank embeds a contiguous, batch-aligned range of pins
(``embed_shards.shard_range``) on its own device (``cuda:LOCAL_RANK`` or the CPU) and writes a shard
directory atomically::

    SHARD_DIR/shard_RRRRR/    image.npy, text.npy, fused.npy [n_r, D], image_missing.npy [n_r],
                              manifest.json (rank, world_size, job token, pin range, model, step,
                              byte size and CRC32 of every file)

then rank 0 checks that every shard is there and intact (``embed_shards.merge_shards``: a missing, partial,
foreign or corrupt shard is an ``EmbedShardError`` naming it) and merges them into ``out``
(atomically, same format as a single process; ``manifest.json`` adds ``world_size``). Shard ranges
are whole batches of the single-process run, so the arrays are identical to it (bit for bit on the
same hardware and thread count). ``SHARD_DIR`` defaults to ``.OUT.shards-JOB`` next to ``out``,
removed after a successful merge; the run directory, the text cache and ``out`` must be on storage
every node sees.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from graph.atomic import atomic_directory
from graph.errors import InputError, MissingInputError
from graph.locks import exclusive_lock
from graph.output_dir import OutputKind, check_output_dir
from pinclip import create_model
from pinclip.factory import get_image_transform, get_tokenizer, get_vlm_tokenizer
from pinclip.model import autocast
from training.checkpoint import (CheckpointError, check_graph_identity, graph_identity, latest_checkpoint,
                                 load_checkpoint, load_model_state, read_graph_identity)
from training.config import load_train_config
from training.data import PinFeatureFetcher, prepare_graph
from training.distributed import resolve_device
from training.text_cache import get_text_cache

__all__ = ["PinBatches", "iter_pin_embeddings", "encode_pins", "load_run_model", "load_run", "embed_run",
           "load_embeddings", "write_embedding_files", "write_common_files", "run_meta", "fill_embeddings"]

FORMAT = "pinclip-embeddings"
VERSION = 1
# Output directories (graph.output_dir): embed replaces only its own exports (shards: training.embed_shards).
EMBED_OUTPUT = OutputKind("exported embeddings", "pinclip embed", "manifest.json", "format", FORMAT)
EMB_KEYS = ("image", "text", "fused")


class PinBatches(Dataset):
    """Item i: the features of pins ``pins[i*B:(i+1)*B]`` (eval transform, no randomness)."""

    def __init__(self, pins: torch.Tensor, batch_size: int, fetcher: Any):
        self.pins = torch.as_tensor(pins).long()
        self.batch_size = int(batch_size)
        self.fetcher = fetcher

    def __len__(self) -> int:
        return -(-self.pins.shape[0] // self.batch_size)

    def __getitem__(self, i: int) -> dict:
        pins = self.pins[i * self.batch_size:(i + 1) * self.batch_size]
        images, missing = self.fetcher.images(pins)
        return {"pins": pins, "images": images, "image_missing": missing, "text": self.fetcher.text(pins)}


def _identity(x: Any) -> Any:
    return x


@torch.no_grad()
def iter_pin_embeddings(model: Any, fetcher: Any, pins: torch.Tensor, batch_size: int = 256,
                        device: torch.device | str = "cpu", precision: str = "auto", num_workers: int = 0,
                        progress: bool = False, desc: str = "embed", text_features_dtype: torch.dtype | None = None
                        ) -> Iterator[tuple[torch.Tensor, dict, torch.Tensor]]:
    """Yield (pins [n], {"image", "text", "fused"}: float32 [n, D] on CPU, image_missing [n]).
    text_features_dtype: with a frozen text tower and token ids from ``fetcher``, round the
    tower's token features to this dtype first (float16: what the text feature cache holds, as
    ``pinclip.PinEncoder`` of an exported run does)."""
    device = torch.device(device)
    ds = PinBatches(pins, batch_size, fetcher)
    kwargs: dict[str, Any] = {"num_workers": num_workers}
    if num_workers:
        kwargs["prefetch_factor"] = 2
    loader = DataLoader(ds, batch_size=None, collate_fn=_identity, generator=torch.Generator().manual_seed(0),
                        pin_memory=device.type == "cuda", **kwargs)
    was_training = model.training
    model.eval()
    try:
        bar = tqdm(total=int(ds.pins.shape[0]), desc=desc, unit="pin", disable=not progress, leave=False)
        for item in loader:
            text = {k: v.to(device, non_blocking=True) for k, v in item["text"].items()}
            if text_features_dtype is not None and model.text.frozen and "input_ids" in text:
                feats = model.text_features(text.pop("input_ids"), text.pop("attention_mask"),
                                            dtype=text_features_dtype)
                text.update(text_features=feats["tokens"], text_mask=feats["mask"])
            with autocast(device.type, precision):
                out = model(item["images"].to(device, non_blocking=True), **text)
            emb = {"image": out["image_emb"].float().cpu(), "text": out["text_emb"].float().cpu(),
                   "fused": out["fused_emb"].float().cpu()}
            bar.update(int(item["pins"].shape[0]))
            yield item["pins"], emb, item["image_missing"]
        bar.close()
    finally:
        model.train(was_training)


def encode_pins(model: Any, fetcher: Any, pins: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
    """{"image", "text", "fused"}: float32 [N, D] for ``pins`` (in that order), in memory, and
    "image_missing": bool [N], the pins encoded with the zero image (no image, or one skipped as
    unreadable under ``data.on_bad_image=skip``)."""
    parts: dict[str, list[torch.Tensor]] = {"image": [], "text": [], "fused": []}
    missing: list[torch.Tensor] = []
    for _, emb, image_missing in iter_pin_embeddings(model, fetcher, pins, **kwargs):
        for k in parts:
            parts[k].append(emb[k])
        missing.append(torch.as_tensor(image_missing).bool())
    out = {k: torch.cat(v) if v else torch.zeros(0, model.embed_dim) for k, v in parts.items()}
    out["image_missing"] = torch.cat(missing) if missing else torch.zeros(0, dtype=torch.bool)
    return out


GRAPH_CHANGED_REMEDY = ("Scores on it would count edges the model may have trained on as held out: restore the "
                        "store the run trained on (same dataset and split parameters), or pass "
                        "--allow-changed-graph (allow_changed_graph=True) to go on anyway.")


def load_run_model(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
                   device: str | torch.device = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """(model in eval mode on ``device``, the run's TrainConfig, the checkpoint state) of a run:
    the model rebuilt from ``RUN_DIR/model_config.json`` (pretrained towers from their paths)
    with a checkpoint's weights (default: the newest). ``state["_path"]`` is the checkpoint file
    and ``state["step"]`` its step. Raises ``MissingInputError`` / ``CheckpointError``."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise MissingInputError(f"{run_dir}: not a training run directory (no config.yaml)")
    # The devices it trained on need not exist here: --device picks this machine's.
    cfg = load_train_config(run_dir / "config.yaml", check_devices=False)
    model_cfg = json.loads((run_dir / "model_config.json").read_text())
    torch.manual_seed(cfg.train.seed)
    model = create_model(model_cfg).to(device)
    rec = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if rec is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to embed with (train first)")
    state = load_checkpoint(rec)
    load_model_state(model, state["model"], state["_path"])
    model.eval()
    return model, cfg, state


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             device: str = "auto", progress: bool = True, log=print, is_main: bool = True,
             barrier=None, allow_changed_graph: bool = False) -> dict[str, Any]:
    """Rebuild a run's model from ``RUN_DIR/model_config.json`` and load a checkpoint (default:
    the newest). Returns {"cfg", "model", "graph", "fetcher", "step", "device", "checkpoint",
    "graph_identity" (the store's, ``training.checkpoint.graph_identity``), "graph_changed"
    (None, or {"recorded", "current"} when allowed)}. The graph store must be the one the run
    recorded, else ``training.checkpoint.GraphChangedError`` unless ``allow_changed_graph``.
    Several processes: only ``is_main`` builds a missing graph store or text cache, the others
    wait at ``barrier`` (a callable)."""
    run_dir = Path(run_dir)
    dev = resolve_device(device)
    model, cfg, state = load_run_model(run_dir, checkpoint, dev)
    g = prepare_graph(cfg, run_dir, is_main, barrier, log=log)
    changed = check_graph_identity(read_graph_identity(run_dir), g.path, f"run {run_dir}", GRAPH_CHANGED_REMEDY,
                                   allow_changed_graph, log=log if is_main else None)
    transform = get_image_transform(model, train=False)
    # The run's own image checks: a bad image is handled in embedding as it was in training.
    images = {"on_bad_image": str(cfg.data.on_bad_image), "max_image_pixels": int(cfg.data.max_image_pixels)}
    if cfg.data.text_cache == "auto" and model.text.frozen:
        cache = get_text_cache(model, get_tokenizer(model), g.features, g.num_pins, cfg.data.cache_dir, dev,
                               progress=progress, is_main=is_main, barrier=barrier, log=log)
        text = {"text_cache": cache}
    else:
        text = {"tokenizer": get_tokenizer(model)}
    fetcher = PinFeatureFetcher(g.features, transform, model.image_size, vlm_tokenizer=get_vlm_tokenizer(model),
                                **text, **images)
    return {"cfg": cfg, "model": model, "graph": g, "fetcher": fetcher, "step": int(state["step"]),
            "device": dev, "checkpoint": state["_path"], "graph_identity": graph_identity(g.path),
            "graph_changed": changed}


def write_common_files(tmp: Path, g: Any, p: int, d: int, dtype: str, missing: np.ndarray, meta: dict) -> dict:
    """The files every export shares: pin ids, flags, external ids and ``manifest.json``."""
    return write_embedding_files(tmp, g.splits.is_cold_start(p).numpy(), g.external_pin_ids(np.arange(p)), p, d,
                                 dtype, missing, meta)


def write_embedding_files(tmp: Path, cold_start: np.ndarray, ext: Any, p: int, d: int, dtype: str,
                          missing: np.ndarray, meta: dict) -> dict:
    """Write the files every export shares into ``tmp``: ``pin_ids.npy``, ``image_missing.npy``
    (``missing``, bool [P]), ``cold_start.npy`` (bool [P]), ``pin_external_ids.arrow`` (``ext``,
    [P] dataset ids) and ``manifest.json`` (``meta`` added). Returns the manifest."""
    np.save(tmp / "pin_ids.npy", np.arange(p, dtype=np.int64))
    np.save(tmp / "image_missing.npy", missing)
    np.save(tmp / "cold_start.npy", np.asarray(cold_start, dtype=bool))
    with pa.OSFile(str(tmp / "pin_external_ids.arrow"), "wb") as sink:
        table = pa.table({"pin_id": ext if isinstance(ext, pa.Array) else pa.array(ext)})
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
    manifest = {"format": FORMAT, "version": VERSION, "num_pins": p, "dim": d, "dtype": dtype,
                "arrays": {"image": "image.npy", "text": "text.npy", "fused": "fused.npy",
                           "pin_ids": "pin_ids.npy", "image_missing": "image_missing.npy",
                           "cold_start": "cold_start.npy", "pin_external_ids": "pin_external_ids.arrow"},
                "normalized": True, **meta}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def run_meta(run: dict, run_dir: str | os.PathLike) -> dict:
    """The manifest entries that name the model, checkpoint, run and graph of an export."""
    model = run["model"]
    meta = {"model": model.config.name, "step": run["step"], "checkpoint": run["checkpoint"],
            "run_dir": str(Path(run_dir).absolute()), "matryoshka_dims": list(model.config.matryoshka_dims),
            "graph_manifest_sha256": run["graph_identity"]["manifest_sha256"]}
    if run.get("graph_changed"):
        meta["graph_changed"] = run["graph_changed"]
    return meta


def fill_embeddings(arrays: dict[str, np.ndarray], missing: np.ndarray, batches: Iterator, offset: int = 0) -> None:
    """Write each batch of ``iter_pin_embeddings`` into rows ``pins - offset`` of the memory-mapped
    ``arrays`` ({"image", "text", "fused"}: [n, D]) and of ``missing`` (bool [n]), then flush."""
    for pins, emb, miss in batches:
        idx = pins.numpy() - offset
        for k, arr in arrays.items():
            arr[idx] = emb[k].numpy().astype(arr.dtype, copy=False)
        missing[idx] = miss.numpy()
    for arr in arrays.values():
        arr.flush()


def embed_run(run_dir: str | os.PathLike, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
              batch_size: int = 256, device: str = "auto", dtype: str = "float32", num_workers: int | None = None,
              progress: bool = True, log=print, shard_dir: str | os.PathLike | None = None,
              allow_changed_graph: bool = False) -> Path:
    """Write the embeddings of every pin of a run's graph to the directory ``out`` (see the
    module docstring). Returns ``out``.

    Under torchrun (``WORLD_SIZE`` > 1) every rank calls this with the same arguments: each embeds
    its shard, rank 0 merges (``shard_dir``: where the shards go; default a temporary sibling of
    ``out``, removed after the merge; a given one is kept). Every rank returns ``out`` once it is
    complete, or raises :class:`EmbedShardError` when any rank failed.

    allow_changed_graph: embed even when the run's graph store changed since the run recorded it
    (otherwise ``training.checkpoint.GraphChangedError``); the manifest records the change."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r}: expected float32 or float16")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    # Refuse a wrong --out (the run directory itself, someone's data) before minutes of loading
    # and encoding; atomic_directory checks again under its lock.
    check_output_dir(out, EMBED_OUTPUT)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from training.embed_shards import embed_distributed  # imports this module: not at the top

        return embed_distributed(run_dir, out, checkpoint, int(batch_size), device, dtype, num_workers, progress,
                                 log, shard_dir, allow_changed_graph)
    out = Path(out)
    # Writing into the run (evaluate's RUN_DIR/embeddings) takes the run's lock: not while a
    # trainer or another evaluate writes it. An export elsewhere only reads the run.
    writes_into_run = Path(run_dir).is_dir() and out.absolute().parent == Path(run_dir).absolute()
    with exclusive_lock(run_dir, "training run") if writes_into_run else contextlib.nullcontext():
        return _embed_single_process(run_dir, out, checkpoint, int(batch_size), device, dtype, num_workers,
                                     progress, log, allow_changed_graph)


def _embed_single_process(run_dir, out: Path, checkpoint, batch_size: int, device: str, dtype: str,
                          num_workers: int | None, progress: bool, log, allow_changed_graph: bool) -> Path:
    run = load_run(run_dir, checkpoint, device, progress, log, allow_changed_graph=allow_changed_graph)
    model, g, cfg = run["model"], run["graph"], run["cfg"]
    workers = cfg.data.num_workers if num_workers is None else int(num_workers)
    p, d = g.num_pins, model.embed_dim
    with atomic_directory(out, EMBED_OUTPUT) as tmp:
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(p, d))
                  for k in EMB_KEYS}
        missing = np.zeros(p, dtype=bool)
        batches = iter_pin_embeddings(model, run["fetcher"], torch.arange(p), batch_size, run["device"],
                                      cfg.model.precision, workers, progress)
        fill_embeddings(arrays, missing, batches)
        del arrays
        write_common_files(tmp, g, p, d, dtype, missing, run_meta(run, run_dir))
    return out


def load_embeddings(path: str | os.PathLike, mmap: bool = True) -> dict[str, Any]:
    """Open an embedding directory: {"image", "text", "fused", "pin_ids", "image_missing",
    "cold_start": numpy arrays (memory-mapped), "pin_external_ids": list, "manifest": dict}."""
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise MissingInputError(f"{path}: not an embedding directory (no manifest.json); "
                                "write one with `pinclip embed RUN_DIR --out DIR`")
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path / 'manifest.json'}: unreadable ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a {FORMAT} directory")
    out: dict[str, Any] = {"manifest": manifest}
    for key, name in manifest["arrays"].items():
        if name.endswith(".npy"):
            out[key] = np.load(path / name, mmap_mode="r" if mmap else None)
    with pa.memory_map(str(path / manifest["arrays"]["pin_external_ids"])) as source:
        out["pin_external_ids"] = pa.ipc.open_file(source).read_all().column("pin_id").to_pylist()
    return out
