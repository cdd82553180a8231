"""The training data pipeline: seed pins -> sampler -> feature fetch -> batches, in DataLoader
workers, resumable to the exact batch.

    seed pins (train pins only) --SeedBatches--> batch b of epoch e (rank shard)
        --NeighborPairSampler on the *training* graph--> positives [S, K], visit weights,
          false-negative mask, shared + hard negatives with their mask
        --feature fetch--> images (Pillow decode + pinclip transform, augmentation drawn from a
          per-batch generator), text (cached frozen-tower token features, or token ids)
        --> TrainBatch: every distinct pin of the batch once ([U] rows) + row indices of the seeds,
            their positives and the negatives.

Leakage: the sampler walks ``g.train_graph()`` (train-split edges only: held-out and cold-start
edges are gone), seeds are the warm pins, and the uniform negatives are drawn from the warm pins
only, so neither a cold-start pin nor a held-out edge reaches training.

Determinism: batch b of epoch e on rank r is a function of (sampler.seed, e, b * world + r) only
(``sampling.loader.batch_generator``), for the walks and for the image augmentation, so the
batches are the same with 0 or N workers, and after a resume. ``TrainLoader`` keeps one
DataLoader for the whole run (its key stream runs across epochs: no worker restart at epoch
boundaries) and records the position after the last batch handed to the trainer.

Pins without an image get an all-zero image tensor (after normalization: the dataset mean colour)
and ``image_missing = True``; pins without text get the empty caption (the cached features of
"" or its token ids).

Bad images: every image is opened with ``pinclip.transforms.open_image`` (regular files only,
never a FIFO that would block; at most ``max_image_pixels`` pixels, checked from the header before
decoding) from a path ``FeatureStore.pin_image_paths`` has checked to stay inside the dataset
directory. A missing, non-regular, unreadable or oversized image, or a path that escapes, raises
``DataError`` naming the pin and the path (``on_bad_image="error"``, the default), or
(``on_bad_image="skip"``) makes the pin a pin without an image: counted, and logged once.
"""
from __future__ import annotations

import hashlib
import itertools
import logging
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from graph import PinBoardGraph
from graph.dataset import build_graph_from_dataset
from graph.errors import InputError, MissingInputError, ToolkitError
from graph.features import ImagePathError, ImageRootError
from pinclip.transforms import DEFAULT_MAX_IMAGE_PIXELS, ImageReadError, open_image
from sampling.loader import SeedBatches, batch_generator

__all__ = ["TrainBatch", "PinFeatureFetcher", "TrainBatchDataset", "TrainLoader", "DataError",
           "caption_group_ids", "train_pins"]

_IMAGE_SALT = 0x1A6E
# Workers tokenize (trainable text towers): the fast tokenizer's own thread pool does not survive
# fork, and it warns about it on every worker start.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


_LOG = logging.getLogger(__name__)
ON_BAD_IMAGE = ("error", "skip")


class DataError(ToolkitError, ValueError):
    """A pin's features cannot be read; the message names the pin and the file."""


def train_pins(g: Any) -> torch.Tensor:
    """int64 [N]: the pins training may use as seeds and negatives (every pin but the cold-start
    ones)."""
    cold = g.splits.is_cold_start(g.num_pins)
    return torch.nonzero(~cold).flatten()


def caption_group_ids(texts: list, pins: torch.Tensor) -> torch.Tensor:
    """int64 [N]: equal for pins with the same caption (a stable 63-bit hash, the same in every
    process), ``-(pin + 1)`` for a pin without one (its own group)."""
    out = torch.empty(len(texts), dtype=torch.int64)
    for i, t in enumerate(texts):
        if t is None:
            out[i] = -(int(pins[i]) + 1)
        else:
            h = hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest()
            out[i] = int.from_bytes(h, "little") & 0x7FFFFFFFFFFFFFFF
    return out


@dataclass
class TrainBatch:
    """One training batch (S seeds, K positives per seed, M extra negatives, U distinct pins).

    pins             int64 [U]          distinct pin ids; row u of the feature tensors is pin pins[u]
    images           float32 [U, 3, H, W]
    image_missing    bool [U]
    text             dict: ``text_features`` fp16 [U, L, W] + ``text_mask`` bool [U, L] (cached
                     frozen tower) or ``input_ids`` / ``attention_mask`` long [U, L]
    seed_rows        int64 [S]          rows of the seeds
    caption_ids      int64 [S]          caption groups of the seeds (multi-positive image-text loss)
    positive_rows    int64 [S, K]       rows of the positives (padding -> row 0, weight 0), or None
    positive_weights float32 [S, K]     visit counts, 0 = padding (the loss's neighbor_weights)
    false_negative_mask bool [S, S*K]
    negative_rows    int64 [M] or None  shared then hard negatives (padding -> row 0, masked)
    negative_mask    bool [S, M] or None
    epoch, index     the batch's position; sample_s, fetch_s: worker seconds spent sampling and
                     fetching features (reported by the progress logs)
    skipped_images   list of (pin, message): pins whose bad image was skipped in this batch
                     (``on_bad_image="skip"``; their rows have ``image_missing``)
    """
    epoch: int
    index: int
    pins: torch.Tensor
    images: torch.Tensor
    image_missing: torch.Tensor
    text: dict
    seed_rows: torch.Tensor
    caption_ids: torch.Tensor
    positive_rows: Optional[torch.Tensor] = None
    positive_weights: Optional[torch.Tensor] = None
    false_negative_mask: Optional[torch.Tensor] = None
    negative_rows: Optional[torch.Tensor] = None
    negative_mask: Optional[torch.Tensor] = None
    sample_s: float = 0.0
    fetch_s: float = 0.0
    skipped_images: list = field(default_factory=list)

    @property
    def num_seeds(self) -> int:
        return int(self.seed_rows.shape[0])

    @property
    def num_rows(self) -> int:
        return int(self.pins.shape[0])

    def _map(self, fn) -> "TrainBatch":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = fn(v)
            elif isinstance(v, dict):
                v = {k: fn(t) for k, t in v.items()}
            out[f.name] = v
        return TrainBatch(**out)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "TrainBatch":
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> "TrainBatch":
        return self._map(lambda t: t.pin_memory())


class PinFeatureFetcher:
    """Features of pins by internal id: images through ``transform`` (a pinclip image transform
    with a ``generator`` attribute), text through ``text_cache`` (``TextFeatureCache``) or
    ``tokenizer``. ``features``: the graph's ``FeatureStore``.

    on_bad_image: ``"error"`` (default) raises ``DataError`` naming the pin and the path of a
      missing, non-regular, unreadable or oversized image (or a path outside the dataset
      directory); ``"skip"`` treats that pin as a pin without an image (zero image,
      ``image_missing``), records it in ``skipped_images`` ({pin: message}) and logs it the first
      time this process skips it (unless ``defer_skip_log``: ``TrainLoader`` sets it when
      workers fetch, and logs each pin once itself, from the batches).
    max_image_pixels: the pixel cap, ``width x height`` from the image header, checked before
      decoding (``pinclip.transforms.open_image``).
    vlm_tokenizer: the joint VLM encoder's prompt tokenizer (``pinclip.factory.get_vlm_tokenizer``),
      when the model's fusion reads a VLM.
    """

    def __init__(self, features: Any, transform: Any, image_size: int, text_cache: Any = None,
                 tokenizer: Any = None, on_bad_image: str = "error",
                 max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS, vlm_tokenizer: Any = None):
        if (text_cache is None) == (tokenizer is None):
            raise ValueError("PinFeatureFetcher needs exactly one of text_cache and tokenizer")
        if on_bad_image not in ON_BAD_IMAGE:
            raise InputError(f"on_bad_image={on_bad_image!r}: expected one of {', '.join(ON_BAD_IMAGE)}")
        if int(max_image_pixels) < 1:
            raise InputError(f"max_image_pixels={max_image_pixels}: must be >= 1")
        self.features = features
        self.transform = transform
        self.image_size = int(image_size)
        self.text_cache = text_cache
        self.tokenizer = tokenizer
        self.vlm_tokenizer = vlm_tokenizer
        self.on_bad_image = on_bad_image
        self.max_image_pixels = int(max_image_pixels)
        self.skipped_images: dict[int, str] = {}
        self.defer_skip_log = False

    @property
    def num_skipped_images(self) -> int:
        """Distinct pins whose image this process has skipped (``on_bad_image="skip"``)."""
        return len(self.skipped_images)

    def _image_paths(self, pins: torch.Tensor) -> list:
        """Per pin: its image path, None (no image), or the ``ImagePathError`` of a path that
        escapes the dataset directory (so that only that pin fails or is skipped)."""
        try:
            return self.features.pin_image_paths(pins)
        except ImagePathError:
            out = []
            for pin in pins.tolist():  # error path only: resolve pin by pin
                try:
                    out.extend(self.features.pin_image_paths([pin]))
                except ImagePathError as exc:
                    out.append(exc)
            return out

    def _bad_image(self, pin: int, path: Any, detail: str, skipped: list | None) -> None:
        """Raise ``DataError`` for a bad image, or record (and log once) a skipped one."""
        message = f"pin {pin} (row {pin} of the pins table): bad image {path}: {detail}"
        if self.on_bad_image == "error":
            raise DataError(f"{message}. Fix or remove the file (`pinclip build-graph DATASET --out GRAPH "
                            "--check-images` lists every bad image), or set data.on_bad_image=skip to train "
                            "without it")
        if skipped is not None:
            skipped.append((pin, message))
        if pin not in self.skipped_images:
            self.skipped_images[pin] = message
            if not self.defer_skip_log:
                _LOG.warning("skipped (data.on_bad_image=skip, treated as a pin without an image): %s", message)

    def images(self, pins: torch.Tensor, generator: torch.Generator | None = None,
               skipped: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(float32 [N, 3, S, S], bool [N] missing) for pins int64 [N]. Augmentation draws from
        ``generator``. A bad image raises ``DataError`` or, with ``on_bad_image="skip"``, leaves
        the pin's row zero with ``missing`` True and appends ``(pin, message)`` to ``skipped``."""
        paths = self._image_paths(pins)
        out = torch.zeros((len(paths), 3, self.image_size, self.image_size), dtype=torch.float32)
        missing = torch.zeros(len(paths), dtype=torch.bool)
        if hasattr(self.transform, "generator"):
            self.transform.generator = generator
        for i, path in enumerate(paths):
            pin = int(pins[i])
            if path is None:
                missing[i] = True
                continue
            if isinstance(path, ImagePathError):
                missing[i] = True
                self._bad_image(pin, repr(path.path), path.problem, skipped)
                continue
            try:
                image = open_image(path, self.max_image_pixels)
            except ImageReadError as exc:
                detail = exc.detail
                if exc.reason == "too_large":
                    detail += f" (data.max_image_pixels={self.max_image_pixels:,})"
                missing[i] = True
                self._bad_image(pin, path, detail, skipped)
                continue
            try:
                out[i] = self.transform(image)
            except (OSError, ValueError, SyntaxError) as exc:
                # The file decoded: a transform that fails on it is a setup error, never skipped.
                raise DataError(f"pin {pin} (row {pin} of the pins table): cannot transform image {path}: "
                                f"{exc}") from None
        return out, missing

    def text(self, pins: torch.Tensor, texts: list | None = None) -> dict:
        """The text inputs of pins int64 [N]: ``text_features`` / ``text_mask`` (cache) or
        ``input_ids`` / ``attention_mask`` (tokenizer), plus ``vlm_input_ids`` /
        ``vlm_attention_mask`` with a ``vlm_tokenizer``."""
        if texts is None and (self.text_cache is None or self.vlm_tokenizer is not None):
            texts = self.features.pin_text(pins)
        if self.text_cache is not None:
            tokens, mask = self.text_cache.fetch(pins)
            out = {"text_features": tokens, "text_mask": mask}
        else:
            out = dict(self.tokenizer(texts))
        if self.vlm_tokenizer is not None:
            out.update(self.vlm_tokenizer(texts))
        return out


class TrainBatchDataset(Dataset):
    """Map-style dataset whose item ``(epoch, index)`` is a :class:`TrainBatch`.

    sampler: a ``sampling.NeighborPairSampler`` on the training graph, or None (no neighbors:
    the CLIP-only baseline). batches: the ``SeedBatches`` of this rank. seed: the sampling seed.
    hard_curriculum: hard negatives grow by one per epoch up to the sampler's count.
    use_negatives: put the sampler's shared and hard negatives in the batch.
    """

    def __init__(self, sampler: Any, batches: SeedBatches, fetcher: PinFeatureFetcher, seed: int = 0,
                 hard_curriculum: bool = False, use_negatives: bool = True):
        self.sampler = sampler
        self.batches = batches
        self.fetcher = fetcher
        self.seed = int(seed)
        self.hard_curriculum = bool(hard_curriculum)
        self.use_negatives = bool(use_negatives)

    def __len__(self) -> int:
        return len(self.batches)

    def num_hard_negatives(self, epoch: int) -> int:
        h = self.sampler.num_hard_negatives if self.sampler is not None else 0
        return min(h, epoch) if self.hard_curriculum else h

    def __getitem__(self, key: tuple[int, int]) -> TrainBatch:
        epoch, index = (int(v) for v in key)
        t0 = time.perf_counter()
        seeds = self.batches.batch(epoch, index)
        gidx = self.batches.global_index(index)
        extra: dict[str, Any] = {}
        if self.sampler is not None:
            dev = self.sampler.device
            gen = batch_generator(self.seed, epoch, gidx, dev)
            pairs = self.sampler.sample(seeds.to(dev), generator=gen,
                                        num_hard_negatives=self.num_hard_negatives(epoch)).to("cpu")
            s, k = pairs.positives.shape
            parts = [seeds, pairs.positives.flatten()]
            if self.use_negatives:
                neg_ids, neg_mask = pairs.extra_negatives()
                if neg_ids.numel():
                    parts.append(neg_ids)
                    extra["negative_mask"] = neg_mask
            ids = torch.cat(parts)
            ids = torch.where(ids >= 0, ids, seeds[0])  # padding rows point at a real pin (masked out)
            pins, inverse = torch.unique(ids, return_inverse=True)
            seed_rows = inverse[:s]
            extra["positive_rows"] = inverse[s:s + s * k].view(s, k)
            extra["positive_weights"] = pairs.positive_weights.float()
            extra["false_negative_mask"] = pairs.false_negative_mask
            if "negative_mask" in extra:
                extra["negative_rows"] = inverse[s + s * k:]
        else:
            pins, seed_rows = torch.unique(seeds, return_inverse=True)
        t1 = time.perf_counter()
        texts = self.fetcher.features.pin_text(pins)
        skipped: list = []
        images, missing = self.fetcher.images(pins, batch_generator(self.seed ^ _IMAGE_SALT, epoch, gidx),
                                              skipped=skipped)
        text = self.fetcher.text(pins, texts)
        captions = caption_group_ids(texts, pins)[seed_rows]
        t2 = time.perf_counter()
        return TrainBatch(epoch, index, pins, images, missing, text, seed_rows, captions,
                          sample_s=t1 - t0, fetch_s=t2 - t1, skipped_images=skipped, **extra)


def _identity(x: Any) -> Any:
    return x


def _worker_init(_worker_id: int) -> None:
    # One intra-op thread per worker (DataLoader sets it too); the main process keeps the cores.
    torch.set_num_threads(1)


class _KeyStream:
    """The DataLoader's sampler: (epoch, index) keys from a start position, across epochs."""

    def __init__(self, epoch: int, index: int, per_epoch: int):
        self.epoch, self.index, self.per_epoch = epoch, index, per_epoch

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, index = self.epoch, self.index
        for e in itertools.count(epoch):
            for b in range(index if e == epoch else 0, self.per_epoch):
                yield (e, b)


class TrainLoader:
    """Endless iterator of :class:`TrainBatch` across epochs, resumable.

    ``state_dict()`` is the position after the last batch handed out; ``load_state_dict``
    resumes there (checked against the seed pool, batch size, shard and seed, so a resume with
    another data config fails instead of silently drawing other batches).

    ``skipped_images`` ({pin: message}) gathers the pins whose bad image was skipped
    (``on_bad_image="skip"``) in the batches handed out, whichever process fetched them; with
    workers, each is logged here once (the workers' fetchers do not log).
    """

    def __init__(self, dataset: TrainBatchDataset, num_workers: int = 0, prefetch_factor: int = 2,
                 pin_memory: bool = False, multiprocessing_context: Any = None):
        if num_workers > 0 and dataset.sampler is not None and dataset.sampler.device.type != "cpu":
            raise ValueError(f"data.num_workers={num_workers} with sampling on {dataset.sampler.device}: "
                             "sample on the GPU in the main process (data.num_workers=0) or set sampler.device=null")
        if len(dataset) == 0:
            raise InputError("no training batches: fewer train pins than one batch (lower train.batch_size)")
        self.dataset = dataset
        self.num_workers = int(num_workers)
        self.prefetch_factor = int(prefetch_factor)
        self.pin_memory = bool(pin_memory)
        self.multiprocessing_context = multiprocessing_context
        self.epoch = 0
        self.next_index = 0
        self.skipped_images: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    @property
    def num_skipped_images(self) -> int:
        """Distinct pins whose bad image was skipped in the batches handed out so far."""
        return len(self.skipped_images)

    def _note_skipped(self, item: TrainBatch) -> None:
        for pin, message in item.skipped_images:
            if pin not in self.skipped_images:
                self.skipped_images[pin] = message
                if self.num_workers:  # the fetcher logged it itself when it ran in this process
                    _LOG.warning("skipped (data.on_bad_image=skip, treated as a pin without an image): %s",
                                 message)

    def __iter__(self) -> Iterator[TrainBatch]:
        per_epoch = len(self.dataset)
        if self.next_index >= per_epoch:
            self.epoch, self.next_index = self.epoch + 1, 0
        kwargs: dict[str, Any] = dict(num_workers=self.num_workers, pin_memory=self.pin_memory,
                                      worker_init_fn=_worker_init if self.num_workers else None)
        if self.num_workers:
            kwargs["prefetch_factor"] = self.prefetch_factor
            kwargs["multiprocessing_context"] = self.multiprocessing_context
        # An explicit generator: DataLoader would otherwise draw its base seed from the global
        # torch RNG, which the trainer checkpoints and must not depend on the loader's restarts.
        # Workers' fetchers record skipped images but leave logging them to this process, which
        # sees every batch and so logs each pin once (each worker would log its own first time).
        self.dataset.fetcher.defer_skip_log = bool(self.num_workers)
        loader = DataLoader(self.dataset, batch_size=None, sampler=_KeyStream(self.epoch, self.next_index, per_epoch),
                            collate_fn=_identity, generator=torch.Generator().manual_seed(self.dataset.seed),
                            **kwargs)
        for item in loader:
            self.epoch, self.next_index = item.epoch, item.index + 1
            self._note_skipped(item)
            yield item

    def state_dict(self) -> dict[str, Any]:
        b = self.dataset.batches
        return {"epoch": self.epoch, "next_index": self.next_index, "seed": self.dataset.seed,
                "shuffle_seed": b.seed, "rank": b.rank, "world_size": b.world_size,
                "batch_size": b.batch_size, "num_seeds": int(b.pool.shape[0]),
                "pool_sha256": hashlib.sha256(b.pool.numpy().tobytes()).hexdigest()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "shuffle_seed", "world_size", "rank", "batch_size", "num_seeds", "pool_sha256"):
            if key in state and state[key] != mine[key]:
                raise ValueError(f"loader state: {key}={state[key]!r} but this run has {key}={mine[key]!r}; "
                                 "resuming would not reproduce the same batches")
        if not 0 <= int(state["next_index"]) <= len(self.dataset):
            raise ValueError(f"loader state: next_index={state['next_index']} out of range [0, {len(self.dataset)}]")
        self.epoch, self.next_index = int(state["epoch"]), int(state["next_index"])


def prepare_graph(cfg: Any, run_dir: Path, is_main: bool = True, barrier=None, log=print):
    """The graph store of a training config: ``data.graph`` opened, or ``data.dataset`` built
    into ``RUN_DIR/graph`` (once; a resumed run reuses it). Checks it has splits and features.
    ``data.image_root`` (when set) replaces the dataset directory the store recorded; the image
    root is checked here (``graph.features.ImageRootError`` naming both paths) when any pin has
    an image."""
    d = cfg.data
    if d.graph:
        path = Path(d.graph).expanduser()
        if not (path / "manifest.json").is_file():
            raise MissingInputError(f"data.graph={d.graph}: not a graph store (no manifest.json); build one with "
                                    "`pinclip build-graph DATASET --out DIR` or set data.dataset=DIR instead")
    elif d.dataset:
        path = run_dir / "graph"
        if is_main and not (path / "manifest.json").is_file():
            log(f"building the graph store of {d.dataset} -> {path}")
            build_graph_from_dataset(d.dataset, path, cold_start_fraction=d.cold_start_fraction,
                                     val_fraction=d.val_fraction, test_fraction=d.test_fraction,
                                     seed=d.split_seed, progress=False)
        if barrier is not None:
            barrier()
    else:
        raise InputError("no data: set data.dataset=DATASET_DIR (a dataset directory) or data.graph=GRAPH_DIR "
                         "(a built graph store)")
    g = PinBoardGraph.open(path, image_root=d.image_root)
    if g.splits is None:
        raise InputError(f"graph store {path} has no splits: rebuild it with `pinclip build-graph`")
    if getattr(g, "features", None) is None:
        raise InputError(f"graph store {path} has no pin features (text, images): rebuild it from the dataset")
    images = g.features.pins.column("image")
    if images.null_count < len(images):
        try:
            g.features.check_image_root()
        except ImageRootError as exc:
            raise ImageRootError(str(exc).replace("image_root=", "data.image_root=", 1)
                                 if d.image_root is not None else str(exc)) from None
    return g
