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
    manifest.json        shapes, dtype, model, checkpoint step, run directory

Pins are encoded in batches (``--batch-size``) through DataLoader workers (image decode with the
*eval* transform: resize + center crop, no augmentation), with a progress bar. A pin without an
image is encoded from the zero image; one without text from the empty caption.
:func:`load_embeddings` opens the directory again.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from pinclip.model import autocast

__all__ = ["PinBatches", "iter_pin_embeddings", "encode_pins", "load_run", "embed_run", "load_embeddings"]

FORMAT = "pinclip-embeddings"
VERSION = 1


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
                        progress: bool = False, desc: str = "embed") -> Iterator[tuple[torch.Tensor, dict, torch.Tensor]]:
    """Yield (pins [n], {"image", "text", "fused"}: float32 [n, D] on CPU, image_missing [n])."""
    from tqdm.auto import tqdm

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
    """{"image", "text", "fused"}: float32 [N, D] for ``pins`` (in that order), in memory."""
    parts: dict[str, list[torch.Tensor]] = {"image": [], "text": [], "fused": []}
    for _, emb, _ in iter_pin_embeddings(model, fetcher, pins, **kwargs):
        for k in parts:
            parts[k].append(emb[k])
    return {k: torch.cat(v) if v else torch.zeros(0, model.embed_dim) for k, v in parts.items()}


def load_run(run_dir: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
             device: str = "auto", progress: bool = True, log=print) -> dict[str, Any]:
    """Rebuild a run's model from ``RUN_DIR/model_config.json`` and load a checkpoint (default:
    the newest). Returns {"cfg", "model", "graph", "fetcher", "step", "device", "checkpoint"}."""
    from pinclip import create_model
    from pinclip.factory import get_image_transform, get_tokenizer

    from training.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint, load_model_state
    from training.config import load_train_config
    from training.data import PinFeatureFetcher, prepare_graph
    from training.distributed import resolve_device
    from training.text_cache import get_text_cache

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir}: not a training run directory (no config.yaml)")
    cfg = load_train_config(run_dir / "config.yaml")
    dev = resolve_device(device)
    model_cfg = json.loads((run_dir / "model_config.json").read_text())
    torch.manual_seed(cfg.train.seed)
    model = create_model(model_cfg).to(dev)
    rec = Path(checkpoint) if checkpoint else latest_checkpoint(run_dir)
    if rec is None:
        raise CheckpointError(f"{run_dir}: no checkpoint to embed with (train first)")
    state = load_checkpoint(rec)
    load_model_state(model, state["model"], state["_path"])
    model.eval()
    g = prepare_graph(cfg, run_dir, log=log)
    transform = get_image_transform(model, train=False)
    if cfg.data.text_cache == "auto" and model.text.frozen:
        cache = get_text_cache(model, get_tokenizer(model), g.features, g.num_pins, cfg.data.cache_dir, dev,
                               progress=progress, log=log)
        fetcher = PinFeatureFetcher(g.features, transform, model.image_size, text_cache=cache)
    else:
        fetcher = PinFeatureFetcher(g.features, transform, model.image_size, tokenizer=get_tokenizer(model))
    return {"cfg": cfg, "model": model, "graph": g, "fetcher": fetcher, "step": int(state["step"]),
            "device": dev, "checkpoint": state["_path"]}


def embed_run(run_dir: str | os.PathLike, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
              batch_size: int = 256, device: str = "auto", dtype: str = "float32", num_workers: int | None = None,
              progress: bool = True, log=print) -> Path:
    """Write the embeddings of every pin of a run's graph to the directory ``out`` (see the
    module docstring). Returns ``out``."""
    import pyarrow as pa

    from graph.atomic import atomic_directory

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r}: expected float32 or float16")
    run = load_run(run_dir, checkpoint, device, progress, log)
    model, g, cfg = run["model"], run["graph"], run["cfg"]
    workers = cfg.data.num_workers if num_workers is None else int(num_workers)
    p, d = g.num_pins, model.embed_dim
    out = Path(out)
    with atomic_directory(out) as tmp:
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(p, d))
                  for k in ("image", "text", "fused")}
        missing = np.zeros(p, dtype=bool)
        for pins, emb, miss in iter_pin_embeddings(model, run["fetcher"], torch.arange(p), batch_size, run["device"],
                                                   cfg.model.precision, workers, progress):
            idx = pins.numpy()
            for k, arr in arrays.items():
                arr[idx] = emb[k].numpy().astype(dtype, copy=False)
            missing[idx] = miss.numpy()
        for arr in arrays.values():
            arr.flush()
        del arrays
        np.save(tmp / "pin_ids.npy", np.arange(p, dtype=np.int64))
        np.save(tmp / "image_missing.npy", missing)
        np.save(tmp / "cold_start.npy", g.splits.is_cold_start(p).numpy())
        ext = g.external_pin_ids(np.arange(p))
        with pa.OSFile(str(tmp / "pin_external_ids.arrow"), "wb") as sink:
            table = pa.table({"pin_id": pa.array(ext)})
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
        manifest = {"format": FORMAT, "version": VERSION, "num_pins": p, "dim": d, "dtype": dtype,
                    "arrays": {"image": "image.npy", "text": "text.npy", "fused": "fused.npy",
                               "pin_ids": "pin_ids.npy", "image_missing": "image_missing.npy",
                               "cold_start": "cold_start.npy", "pin_external_ids": "pin_external_ids.arrow"},
                    "normalized": True, "model": model.config.name, "step": run["step"],
                    "checkpoint": run["checkpoint"], "run_dir": str(Path(run_dir).absolute()),
                    "matryoshka_dims": list(model.config.matryoshka_dims)}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def load_embeddings(path: str | os.PathLike, mmap: bool = True) -> dict[str, Any]:
    """Open an embedding directory: {"image", "text", "fused", "pin_ids", "image_missing",
    "cold_start": numpy arrays (memory-mapped), "pin_external_ids": list, "manifest": dict}."""
    import pyarrow as pa

    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path}: not a {FORMAT} directory")
    out: dict[str, Any] = {"manifest": manifest}
    for key, name in manifest["arrays"].items():
        if name.endswith(".npy"):
            out[key] = np.load(path / name, mmap_mode="r" if mmap else None)
    with pa.memory_map(str(path / manifest["arrays"]["pin_external_ids"])) as source:
        out["pin_external_ids"] = pa.ipc.open_file(source).read_all().column("pin_id").to_pylist()
    return out
