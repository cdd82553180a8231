"""Embeddings of the pins of any dataset directory: ``pinclip embed RUN_DIR|MODEL_DIR --dataset DIR``.

Pins that arrived after training (or any dataset in the README format) are read straight from
their pins table, without building a graph store, and embedded with a training run's model or a
model directory written by ``pinclip export``. The output directory has the format of
``training.embed`` (same files, same manifest keys, plus ``"source": "dataset"``), so
``load_embeddings``, ``pinclip ann-index`` and ``pinclip search`` take it as they take a run's.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from graph.atomic import atomic_directory
from graph.build_inputs import read_nodes
from graph.dataset import find_table
from graph.errors import InputError
from graph.features import BOARD_COLUMNS, FeatureStore
from graph.locks import exclusive_lock
from graph.output_dir import check_output_dir
from pinclip.factory import get_image_transform, get_tokenizer, get_vlm_tokenizer
from pinclip.pretrained import is_model_dir
from pinclip.pretrained import load as load_model_dir
from training.data import PinFeatureFetcher
from training.distributed import resolve_device
from training.embed import (EMB_KEYS, EMBED_OUTPUT, fill_embeddings, iter_pin_embeddings, load_run_model,
                            write_embedding_files)
from training.text_cache import get_text_cache

__all__ = ["DatasetPins", "read_dataset_pins", "embed_dataset"]


@dataclass
class DatasetPins:
    """The pins of a dataset directory (README "The dataset format"), read without building a
    graph store: ``ids`` (the dataset's pin ids, int64 or string [P], row order), ``features``
    (a ``graph.features.FeatureStore`` rooted at the dataset directory: text, image, fresh) and
    ``has_fresh`` (whether the table has a ``fresh`` column). Row ``i`` is pin ``i``."""
    dataset: Path
    table: Path
    ids: pa.Array
    features: FeatureStore
    has_fresh: bool

    @property
    def num_pins(self) -> int:
        return len(self.ids)

    def cold_start(self) -> np.ndarray:
        """bool [P]: the ``fresh`` column (all False without one)."""
        return self.features.pin_fresh(np.arange(self.num_pins)).numpy()


def read_dataset_pins(dataset_dir: str | os.PathLike, progress: bool = False) -> DatasetPins:
    """Read the pins table of a dataset directory the way ``pinclip build-graph`` reads it (types,
    unique ids, image paths that stay inside the directory: a ``graph.tables.DatasetError``
    naming the row otherwise). Boards and edges are not read."""
    dataset_dir = Path(dataset_dir)
    table = find_table(dataset_dir, "pins")
    nodes = read_nodes(table, "pins", progress)
    ids = nodes.ids.cast(pa.string()) if pa.types.is_large_string(nodes.ids.type) else nodes.ids
    boards = pa.table({name: pa.array([], typ) for name, typ in BOARD_COLUMNS.items()})
    return DatasetPins(dataset_dir, table, ids, FeatureStore(nodes.features, boards, dataset_dir), nodes.has_fresh)


def embed_dataset(source: str | os.PathLike | Any, dataset: str | os.PathLike, out: str | os.PathLike,
                  checkpoint: str | os.PathLike | None = None, batch_size: int = 256, device: str = "auto",
                  dtype: str = "float32", num_workers: int = 0, progress: bool = True, log=print,
                  skip_bad_images: bool = False) -> Path:
    """Embed every pin of the dataset directory ``dataset`` (any dataset in the README format,
    e.g. pins that arrived after training; no graph store is built) with ``source``: a training
    run directory (its newest checkpoint, or ``checkpoint``), a model directory written by
    ``pinclip export`` (``pinclip.load``) or a loaded ``pinclip.PinEncoder``. Writes ``out`` in
    the format of :func:`embed_run` (the module docstring); ``cold_start.npy`` is the dataset's
    ``fresh`` column (all False without one) and ``manifest.json`` adds ``"source": "dataset"``,
    ``"dataset"`` (absolute path) and ``"run_dir"`` or ``"model_dir"``. Returns ``out``.

    The pins are encoded as the run's own export encodes them (eval transform, zero image for a
    pin without one, empty caption for a pin without text, batches through DataLoader workers).
    A run's frozen text tower goes through the text feature cache when its config says
    ``data.text_cache=auto`` (the cache of these captions, under ``data.cache_dir``), so the
    run's own dataset embeds to the same vectors as ``embed_run``; a model directory runs the
    text tower with the rounding its ``preprocess.json`` records (``PinEncoder.text_features_dtype``,
    float16 for a frozen tower: the cache's), its eval transform and its precision, as
    ``PinEncoder.encode_pins`` does. A bad image is a ``DataError`` naming the
    pin, or with ``skip_bad_images`` a pin without an image (``image_missing``)."""
    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype={dtype!r}: expected float32 or float16")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise InputError("embedding a dataset (--dataset) runs in one process; run it without torchrun")
    check_output_dir(out, EMBED_OUTPUT)
    out = Path(out)
    run_dir = None
    if isinstance(source, (str, os.PathLike)) and not is_model_dir(source):
        run_dir = Path(source)
    writes_into_run = run_dir is not None and run_dir.is_dir() and out.absolute().parent == run_dir.absolute()
    with exclusive_lock(run_dir, "training run") if writes_into_run else contextlib.nullcontext():
        return _embed_dataset(source, run_dir, Path(dataset), out, checkpoint, int(batch_size), device, dtype,
                              int(num_workers), progress, log, skip_bad_images)


def _embed_dataset(source, run_dir: Path | None, dataset: Path, out: Path, checkpoint, batch_size: int,
                   device: str, dtype: str, num_workers: int, progress: bool, log, skip_bad_images: bool) -> Path:
    pins = read_dataset_pins(dataset, progress=False)
    images = {"on_bad_image": "skip" if skip_bad_images else "error"}
    if run_dir is not None:
        dev = resolve_device(device)
        model, cfg, state = load_run_model(run_dir, checkpoint, dev)
        images["max_image_pixels"] = int(cfg.data.max_image_pixels)
        transform, tokenizer = get_image_transform(model, train=False), get_tokenizer(model)
        precision = cfg.model.precision
        text_cache, text_features_dtype = None, None
        if cfg.data.text_cache == "auto" and model.text.frozen:
            text_cache = get_text_cache(model, tokenizer, pins.features, pins.num_pins, cfg.data.cache_dir, dev,
                                        progress=progress, log=log)
        meta = {"model": model.config.name, "step": int(state["step"]), "checkpoint": state["_path"],
                "run_dir": str(run_dir.absolute())}
    else:
        if checkpoint is not None:
            raise InputError(f"checkpoint={checkpoint}: a model directory holds one model; --checkpoint is for a "
                             "training run directory")
        if isinstance(source, (str, os.PathLike)):
            encoder = load_model_dir(source, device=str(resolve_device(device)))
            model_dir = str(Path(source).absolute())
        else:
            encoder = source
            model_dir = str(encoder.directory) if getattr(encoder, "directory", None) is not None else None
        model, dev = encoder.model, torch.device(encoder.device)
        transform, tokenizer, text_cache = encoder.image_transform, encoder.tokenizer, None
        precision, text_features_dtype = encoder.precision, encoder.text_features_dtype
        manifest = dict(getattr(encoder, "manifest", None) or {})
        meta = {"model": model.config.name, "step": manifest.get("step"), "checkpoint": manifest.get("checkpoint"),
                "model_dir": model_dir}
    meta.update({"matryoshka_dims": list(model.config.matryoshka_dims), "source": "dataset",
                 "dataset": str(dataset.absolute())})
    text = {"text_cache": text_cache} if text_cache is not None else {"tokenizer": tokenizer}
    fetcher = PinFeatureFetcher(pins.features, transform, model.image_size, vlm_tokenizer=get_vlm_tokenizer(model),
                                **text, **images)
    p, d = pins.num_pins, model.embed_dim
    with atomic_directory(out, EMBED_OUTPUT) as tmp:
        arrays = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dtype, shape=(p, d))
                  for k in EMB_KEYS}
        missing = np.zeros(p, dtype=bool)
        batches = iter_pin_embeddings(model, fetcher, torch.arange(p), batch_size, dev, precision, num_workers,
                                      progress, text_features_dtype=text_features_dtype)
        fill_embeddings(arrays, missing, batches)
        del arrays
        if skip_bad_images and fetcher.num_skipped_images:
            log(f"skipped {fetcher.num_skipped_images} bad image(s) (embedded as pins without an image)")
        write_embedding_files(tmp, pins.cold_start(), pins.ids, p, d, dtype, missing, meta)
    return out
