"""Cached token features of a frozen text tower: computed once per (dataset texts, text tower).

On a CPU the all-MiniLM-L6-v2 forward costs more than the whole tiny image tower, and a frozen
tower's output never changes: every pin's token features are computed once, stored in fp16 and
memory-mapped by the training and embedding loaders (``model(images, text_features=...,
text_mask=...)``).

Layout of a cache directory (written atomically with ``graph.atomic.atomic_directory``)::

    manifest.json   key, num_pins, context_length, width, text model, texts digest
    tokens.npy      float16 [P, L, W]   token features (rows of padding positions included)
    mask.npy        bool    [P, L]      True for real tokens

The key hashes the pins' captions (in internal id order; a null caption is distinct from the
empty string), the text tower's weights (names, shapes, dtypes and bytes) and the tokenizer
(source and context length), so a different dataset, tower or tokenizer never reads a stale
cache. Directories live under ``CACHE_ROOT/text_features/KEY`` where ``CACHE_ROOT`` is
``data.cache_dir``, else ``$PINCLIP_CACHE_DIR``, else ``~/.cache/pinclip``.

Size: P * L * W * 2 bytes (3000 pins, L = 32, W = 384: 74 MB).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from graph.atomic import atomic_directory
from graph.output_dir import OutputKind

__all__ = ["TextFeatureCache", "default_cache_root", "text_cache_key", "get_text_cache", "texts_digest"]

FORMAT = "pinclip-text-features"
CACHE_OUTPUT = OutputKind("a text feature cache", "the trainer", "manifest.json", "format", FORMAT)
VERSION = 1


def default_cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    env = os.environ.get("PINCLIP_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "pinclip"


def _all_texts(features: Any, num_pins: int, chunk: int = 65536):
    for start in range(0, num_pins, chunk):
        stop = min(start + chunk, num_pins)
        yield start, features.pin_text(np.arange(start, stop))


def texts_digest(features: Any, num_pins: int) -> str:
    """sha256 of every pin's caption in id order (null captions marked apart from "")."""
    h = hashlib.sha256()
    for _, texts in _all_texts(features, num_pins):
        for t in texts:
            if t is None:
                h.update(b"\x00N")
            else:
                b = t.encode("utf-8")
                h.update(b"\x01" + len(b).to_bytes(8, "little") + b)
    return h.hexdigest()


def tower_digest(tower: torch.nn.Module) -> str:
    """sha256 of a module's state (names, dtypes, shapes and bytes of every tensor)."""
    h = hashlib.sha256()
    for name, t in sorted(tower.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def text_cache_key(texts_sha: str, tower_sha: str, tokenizer_source: str, context_length: int) -> str:
    h = hashlib.sha256(f"{FORMAT}/{VERSION}|{texts_sha}|{tower_sha}|{tokenizer_source}|{context_length}".encode())
    return h.hexdigest()[:24]


class TextFeatureCache:
    """Memory-mapped token features of every pin. ``fetch(ids)`` -> (tokens fp16 [N, L, W],
    mask bool [N, L]). Pickles by path (DataLoader workers re-open the maps)."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        manifest_path = self.directory / "manifest.json"
        try:
            self.manifest = json.loads(manifest_path.read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"text feature cache {self.directory}: unreadable manifest.json ({exc})") from None
        if self.manifest.get("format") != FORMAT or self.manifest.get("version") != VERSION:
            raise ValueError(f"text feature cache {self.directory}: format {self.manifest.get('format')!r} "
                             f"version {self.manifest.get('version')!r}, expected {FORMAT!r} {VERSION}")
        self._tokens = self._mask = None
        self._open()

    def _open(self) -> None:
        try:
            self._tokens = np.load(self.directory / "tokens.npy", mmap_mode="r")
            self._mask = np.load(self.directory / "mask.npy", mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ValueError(f"text feature cache {self.directory}: cannot open arrays ({exc}); delete the "
                             "directory to rebuild it") from None
        p, length = self.manifest["num_pins"], self.manifest["context_length"]
        if self._tokens.shape[:2] != (p, length) or self._mask.shape != (p, length):
            raise ValueError(f"text feature cache {self.directory}: arrays {self._tokens.shape} / "
                             f"{self._mask.shape} do not match manifest ({p} pins, length {length})")

    @property
    def num_pins(self) -> int:
        return int(self.manifest["num_pins"])

    @property
    def key(self) -> str:
        return str(self.manifest["key"])

    def fetch(self, ids: Any) -> tuple[torch.Tensor, torch.Tensor]:
        idx = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64)
        order = np.argsort(idx, kind="stable")  # sorted reads of the memory map
        tokens = np.empty((idx.shape[0],) + self._tokens.shape[1:], dtype=np.float16)
        mask = np.empty((idx.shape[0],) + self._mask.shape[1:], dtype=bool)
        tokens[order] = self._tokens[idx[order]]
        mask[order] = self._mask[idx[order]]
        return torch.from_numpy(tokens), torch.from_numpy(mask)

    def __getstate__(self) -> dict:
        return {"directory": self.directory, "manifest": self.manifest}

    def __setstate__(self, state: dict) -> None:
        self.directory, self.manifest = state["directory"], state["manifest"]
        self._open()


@torch.no_grad()
def _build(directory: Path, model: Any, tokenizer: Any, features: Any, num_pins: int, key: str,
           meta: dict, device: torch.device, batch_size: int, progress: bool) -> None:
    length = tokenizer.context_length
    width = model.text.width
    with atomic_directory(directory, CACHE_OUTPUT) as tmp:
        tokens = np.lib.format.open_memmap(tmp / "tokens.npy", mode="w+", dtype=np.float16,
                                           shape=(num_pins, length, width))
        mask = np.lib.format.open_memmap(tmp / "mask.npy", mode="w+", dtype=bool, shape=(num_pins, length))
        bar = tqdm(total=num_pins, desc="text features", unit="pin", disable=not progress, leave=False)
        for start, texts in _all_texts(features, num_pins):
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size])
                ids, att = enc["input_ids"], enc["attention_mask"]
                if ids.shape[1] < length:  # "longest" padding tokenizers: pad to the full length
                    pad = length - ids.shape[1]
                    ids = torch.nn.functional.pad(ids, (0, pad))
                    att = torch.nn.functional.pad(att, (0, pad))
                out = model.text_features(ids.to(device), att.to(device), dtype=torch.float16)
                lo = start + i
                tokens[lo:lo + ids.shape[0]] = out["tokens"].cpu().numpy()
                mask[lo:lo + ids.shape[0]] = out["mask"].cpu().numpy()
                bar.update(ids.shape[0])
        bar.close()
        tokens.flush()
        mask.flush()
        del tokens, mask
        manifest = {"format": FORMAT, "version": VERSION, "key": key, "num_pins": num_pins,
                    "context_length": length, "width": width, **meta}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def get_text_cache(model: Any, tokenizer: Any, features: Any, num_pins: int,
                   cache_dir: str | os.PathLike | None = None, device: torch.device | str = "cpu",
                   batch_size: int = 256, progress: bool = True, is_main: bool = True,
                   barrier: Callable[[], None] | None = None, log: Callable[[str], None] = print
                   ) -> TextFeatureCache:
    """The cache of ``model``'s frozen text tower over every pin's caption: opened when it
    exists, else built (by the main rank; the others wait at ``barrier``)."""
    if not model.text.frozen:
        raise ValueError("a text feature cache needs a frozen text tower (model text.freeze = 'frozen'); "
                         "set data.text_cache=off to run a trainable tower")
    texts_sha = texts_digest(features, num_pins)
    tower_sha = tower_digest(model.text)
    source = str(getattr(tokenizer, "path", "?"))
    key = text_cache_key(texts_sha, tower_sha, source, tokenizer.context_length)
    directory = default_cache_root(cache_dir) / "text_features" / key
    if is_main and not (directory / "manifest.json").is_file():
        log(f"building the text feature cache of {num_pins} pins -> {directory}")
        meta = {"texts_sha256": texts_sha, "tower_sha256": tower_sha, "tokenizer": source,
                "text_model": model.config.text.pretrained if model.config.text.type == "hf" else "scratch"}
        _build(directory, model, tokenizer, features, num_pins, key, meta, torch.device(device), batch_size,
               progress)
    if barrier is not None:
        barrier()
    cache = TextFeatureCache(directory)
    if cache.key != key or cache.num_pins != num_pins:
        raise ValueError(f"text feature cache {directory}: key {cache.key} / {cache.num_pins} pins, expected "
                         f"{key} / {num_pins}; delete the directory to rebuild it")
    return cache
