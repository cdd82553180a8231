"""A trained PinCLIP as a self-contained model directory, and :class:`PinEncoder` to use it.

    from pinclip import load
    enc = load("model_dir")                        # verified, safetensors + JSON only
    img = enc.encode_image(["a.jpg", pil_image])   # float32 [N, D] on CPU, L2-normalized
    txt = enc.encode_text(["a caption"], dim=64)   # a Matryoshka prefix, re-normalized
    pin = enc.encode_pins(images=["a.jpg", None], texts=[None, "caption"])   # fused

Layout of a model directory (:func:`save_pretrained` writes it; ``pinclip export RUN_DIR --out
DIR`` writes one from a training run)::

    manifest.json        {"format": "pinclip-model", "version": 1, "embed_dim", "image_size",
                          "files": {name: {"sha256", "bytes"}}, ...}
    config.json          the model config (pinclip.config.config_to_dict)
    model.safetensors    every weight (frozen towers included); no pickle anywhere
    preprocess.json      the eval image transform, the tokenizer, the text feature precision
    README.md            the model card
    tokenizer/           the tokenizer files (absent when it is the built-in MiniLM)
    vision_tower/        config.json (+ preprocessor_config.json) of a Hugging Face image tower
    text_tower/          config.json of a Hugging Face text tower
    vlm/                 config.json, tokenizer and preprocessor_config.json of a joint VLM encoder

:func:`load` checks every file against the manifest's sha256 before reading any weight, builds
the architecture from the configs alone (nothing is read from ``pretrained`` paths or the hub)
and loads ``model.safetensors`` strictly. Errors are :class:`ModelDirError` (a
:class:`pinclip.config.ConfigError`, so the CLI reports them as user errors).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .config import BUILTIN_MINILM, ConfigError, PinCLIPConfig, config_from_dict, config_to_dict
from .factory import create_model, get_image_transform, get_vlm_tokenizer
from .model import PinCLIP, autocast, truncate_embedding
from .tokenizer import HFTokenizer
from .transforms import HFImageTransform, ImageTransform, load_rgb

__all__ = ["MODEL_FORMAT", "MODEL_VERSION", "ModelDirError", "PinEncoder", "save_pretrained", "is_model_dir",
           "load"]

MODEL_FORMAT = "pinclip-model"
MODEL_VERSION = 1
WEIGHTS = "model.safetensors"
REQUIRED = ("config.json", WEIGHTS, "preprocess.json")
VISION_DIR, TEXT_DIR, TOKENIZER_DIR, VLM_DIR = "vision_tower", "text_tower", "tokenizer", "vlm"
_CHUNK = 1 << 20


class ModelDirError(ConfigError):
    """A model directory that cannot be loaded: missing or unlisted files, another format or
    version, a file whose sha256 or size does not match the manifest, weights that do not fit."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def _minimal_card(model: PinCLIP) -> str:
    cfg = model.config
    return (f"# PinCLIP model `{cfg.name}`\n\n{cfg.description}\n\n"
            f"Image, text and fused embeddings of {cfg.embed_dim} dimensions"
            + (f" (Matryoshka prefixes {cfg.matryoshka_dims})" if cfg.matryoshka_dims else "") + ".\n\n"
            "```python\nimport pinclip\nenc = pinclip.load(\"THIS_DIR\")\n"
            "enc.encode_pins(images=[\"pin.jpg\"], texts=[\"a caption\"])\n```\n")


def _copy_preprocessor(checkpoint: str | None, target: Path) -> None:
    """The checkpoint folder's ``preprocessor_config.json`` (image statistics), when it has one."""
    if not checkpoint:
        return
    pre = Path(checkpoint) / "preprocessor_config.json"
    if pre.is_file():
        (target / "preprocessor_config.json").write_bytes(pre.read_bytes())


def _save_preprocess(model: PinCLIP, directory: Path, text_features_dtype: str | None, precision: str) -> dict:
    """preprocess.json (and the folders it names): the eval transform and the tokenizer."""
    v, t = model.config.vision, model.config.text
    transform = get_image_transform(model, train=False)
    if isinstance(transform, HFImageTransform):
        image = {"kind": "hf_processor", "processor": VISION_DIR, "image_size": int(transform.image_size)}
    else:
        image = {"kind": "pinclip", "image_size": int(transform.image_size), "mean": list(transform.mean),
                 "std": list(transform.std), "resize": "shorter_side_bicubic", "crop": "center",
                 "convert": "RGB (alpha composited on white)"}
    source = t.tokenizer or (t.pretrained if t.type == "hf" else BUILTIN_MINILM)
    if source == BUILTIN_MINILM:
        tok_ref = BUILTIN_MINILM
    else:
        # A local folder or a hub id in the cache: its files travel with the model.
        HFTokenizer(source, t.context_length).tokenizer.save_pretrained(str(directory / TOKENIZER_DIR))
        tok_ref = TOKENIZER_DIR
    if v.type != "vit":
        model.visual.model.config.save_pretrained(str(directory / VISION_DIR))
        _copy_preprocessor(getattr(model.visual, "pretrained_path", None), directory / VISION_DIR)
    if t.type == "hf":
        model.text.model.config.save_pretrained(str(directory / TEXT_DIR))
    if model.vlm is not None:
        # The architecture, the prompt tokenizer and the image statistics; the weights are in WEIGHTS.
        model.vlm.model.config.save_pretrained(str(directory / VLM_DIR))
        model.vlm.tokenizer.save_pretrained(str(directory / VLM_DIR))
        _copy_preprocessor(model.vlm.pretrained_path, directory / VLM_DIR)
    data = {"image": image,
            "tokenizer": {"source": tok_ref, "context_length": int(t.context_length), "padding": "max_length"},
            "text_features_dtype": text_features_dtype, "precision": precision}
    _write_json(directory / "preprocess.json", data)
    return data


def save_pretrained(model: PinCLIP, directory: str | os.PathLike, *, card: str | None = None,
                    extra_manifest: dict | None = None, text_features_dtype: str | None = "auto",
                    precision: str = "auto") -> dict:
    """Write ``model`` into the existing, empty ``directory`` (the caller makes it atomic) and
    return the manifest.

    LoRA adapters are merged into the weights they adapt (:func:`pinclip.lora.merge_lora`), so
    loading the directory needs no peft and the config says ``lora.rank`` 0.

    text_features_dtype: the dtype a frozen text tower's token features are rounded to before the
      projection and fusion (``"float16"``: what the trainer's text cache stores, so the encoder
      reproduces ``pinclip embed`` of the run); ``"auto"``: float16 when the text tower is frozen,
      else None (no rounding); None: never round.
    precision: the autocast precision of the encoder (``pinclip.autocast``; ``auto`` is fp32 on CPU).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: not a directory (save_pretrained writes into an existing empty one)")
    if any(directory.iterdir()):
        raise ModelDirError(f"{directory}: not empty; save_pretrained writes into an empty directory")
    from safetensors.torch import save_model

    from .lora import merge_lora
    # LoRA adapters are merged into their base weights: the directory holds a plain model.
    model = merge_lora(model)
    if text_features_dtype == "auto":
        text_features_dtype = "float16" if model.text.frozen else None
    if text_features_dtype not in (None, "float16", "bfloat16", "float32"):
        raise ValueError(f"text_features_dtype={text_features_dtype!r}: expected auto, None, float16, bfloat16 "
                         "or float32")
    _write_json(directory / "config.json", config_to_dict(model.config))
    # save_model keeps one name of each shared (tied) tensor; load_model restores the others.
    save_model(model, str(directory / WEIGHTS), metadata={"format": "pt"})
    _save_preprocess(model, directory, text_features_dtype, precision)
    (directory / "README.md").write_text(card if card is not None else _minimal_card(model))
    files = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        name = path.relative_to(directory).as_posix()
        files[name] = {"sha256": _sha256(path), "bytes": path.stat().st_size}
    manifest = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "embed_dim": int(model.embed_dim),
                "image_size": int(model.image_size), "model": model.config.name,
                "matryoshka_dims": list(model.config.matryoshka_dims), "files": files, **(extra_manifest or {})}
    _write_json(directory / "manifest.json", manifest)
    return manifest


def is_model_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` holds a ``manifest.json`` of format ``pinclip-model``."""
    try:
        data = json.loads((Path(path) / "manifest.json").read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == MODEL_FORMAT


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelDirError(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelDirError(f"{path}: unreadable ({exc})") from None


def _verify(directory: Path) -> dict:
    """The manifest, after every file it lists matched its size and sha256."""
    if not directory.is_dir():
        raise ModelDirError(f"{directory}: no such model directory")
    if not (directory / "manifest.json").is_file():
        raise ModelDirError(f"{directory}: not a model directory (no manifest.json); write one with "
                            "`pinclip export RUN_DIR --out DIR` or pinclip.save_pretrained")
    manifest = _read_json(directory / "manifest.json")
    if not isinstance(manifest, dict) or manifest.get("format") != MODEL_FORMAT:
        fmt = manifest.get("format") if isinstance(manifest, dict) else None
        raise ModelDirError(f"{directory}: manifest.json has format {fmt!r}, expected {MODEL_FORMAT!r}")
    if manifest.get("version") != MODEL_VERSION:
        raise ModelDirError(f"{directory}: model format version {manifest.get('version')!r}, this code reads "
                            f"{MODEL_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise ModelDirError(f"{directory}/manifest.json: no 'files' table")
    for name in REQUIRED:
        if name not in files:
            raise ModelDirError(f"{directory}/manifest.json: does not list {name}")
    root = directory.resolve()
    for name, rec in files.items():
        path = directory / name
        if root not in path.resolve().parents:
            raise ModelDirError(f"{directory}/manifest.json: file {name!r} is outside the model directory")
        if not path.is_file():
            raise ModelDirError(f"{path}: missing (listed in manifest.json)")
        size = path.stat().st_size
        if not isinstance(rec, dict) or size != rec.get("bytes"):
            expected = rec.get("bytes") if isinstance(rec, dict) else None
            raise ModelDirError(f"{path}: {size} bytes, manifest.json says {expected} (truncated or modified)")
        digest = _sha256(path)
        if digest != rec.get("sha256"):
            raise ModelDirError(f"{path}: sha256 {digest} does not match manifest.json ({rec.get('sha256')}); "
                                "the file was modified or corrupted")
    return manifest


def _architecture_config(config: dict, directory: Path) -> dict:
    """The config to build the architecture from, with no pretrained weights to read.

    Why: a config may name pretrained towers (a local checkpoint folder, a hub id, the built-in
    MiniLM); ``model.safetensors`` holds every weight, so those are never read. A Hugging Face
    tower's ``pretrained`` is pointed at its saved ``config.json`` in this directory and built
    with ``create_model(..., pretrained_weights=False)`` (architecture only); the tokenizer comes
    from ``preprocess.json``."""
    cfg = copy.deepcopy(config)
    if cfg.get("vision", {}).get("type", "vit") != "vit":
        cfg["vision"]["pretrained"] = str(directory / VISION_DIR)
    if cfg.get("text", {}).get("type", "hf") == "hf":
        cfg["text"]["pretrained"] = str(directory / TEXT_DIR)
    if cfg.get("vlm", {}).get("pretrained") is not None:
        cfg["vlm"]["pretrained"] = str(directory / VLM_DIR)
    return cfg


def load(directory: str | os.PathLike, device: str | torch.device = "cpu") -> "PinEncoder":
    """Open a model directory: verify it, build the model, load every weight (strict), eval mode.
    Reads JSON and safetensors only (nothing is unpickled). Raises :class:`ModelDirError`."""
    directory = Path(directory).expanduser().absolute()
    manifest = _verify(directory)
    config = _read_json(directory / "config.json")
    preprocess = _read_json(directory / "preprocess.json")
    if not isinstance(config, dict) or not isinstance(preprocess, dict):
        raise ModelDirError(f"{directory}: config.json and preprocess.json must be JSON objects")
    original = config_from_dict(config)
    tok = preprocess["tokenizer"]
    arch = _architecture_config(config, directory)
    # get_tokenizer(encoder.model) then finds the same tokenizer as encoder.tokenizer.
    arch.setdefault("text", {})["tokenizer"] = (tok["source"] if tok["source"] == BUILTIN_MINILM
                                                else str(directory / tok["source"]))
    model = create_model(arch, pretrained_weights=False)
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    try:
        load_model(model, str(directory / WEIGHTS), strict=True)
    except (RuntimeError, SafetensorError) as exc:
        raise ModelDirError(f"{directory / WEIGHTS}: does not fit the model of config.json ({exc})") from None
    model = model.to(device).eval()
    return PinEncoder(model, original, manifest, preprocess, directory, device)


class PinEncoder:
    """A loaded model in use: image, text and fused (pin) embeddings.

    Attributes: ``model`` (:class:`PinCLIP`, eval mode), ``config`` (its :class:`PinCLIPConfig`
    as saved), ``embed_dim``, ``image_size``, ``manifest``, ``device``, ``image_transform`` (the
    eval transform: PIL/path -> [3, S, S] float32), ``tokenizer`` (:class:`HFTokenizer`),
    ``text_features_dtype`` and ``precision`` (from ``preprocess.json``).

    Every ``encode_*`` returns float32 [N, D] CPU tensors, L2-normalized, computed in batches
    under ``torch.no_grad``; ``dim`` serves a Matryoshka prefix (the first ``dim`` coordinates,
    re-normalized; 1 <= dim <= embed_dim).
    """

    def __init__(self, model: PinCLIP, config: PinCLIPConfig, manifest: dict, preprocess: dict,
                 directory: Path, device: str | torch.device = "cpu"):
        self.model = model
        self.config = config
        self.manifest = manifest
        self.directory = directory
        self.device = torch.device(device)
        self.embed_dim = int(model.embed_dim)
        self.image_size = int(model.image_size)
        image = preprocess["image"]
        if image["kind"] == "hf_processor":
            self.image_transform = HFImageTransform.from_pretrained(str(directory / image["processor"]),
                                                                    int(image["image_size"]))
        else:
            self.image_transform = ImageTransform(int(image["image_size"]), image["mean"], image["std"], train=False)
        tok = preprocess["tokenizer"]
        source = tok["source"] if tok["source"] == BUILTIN_MINILM else str(directory / tok["source"])
        self.tokenizer = HFTokenizer(source, int(tok["context_length"]), tok.get("padding", "max_length"))
        self.vlm_tokenizer = get_vlm_tokenizer(model)
        dtype = preprocess.get("text_features_dtype")
        self.text_features_dtype = getattr(torch, dtype) if dtype else None
        self.precision = preprocess.get("precision", "auto")

    def __repr__(self) -> str:
        return f"PinEncoder({self.config.name!r}, dim={self.embed_dim}, from {str(self.directory)!r})"

    # -- inputs ---------------------------------------------------------------------------------
    def _check(self, dim: int | None, batch_size: int) -> int:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r}: must be an integer >= 1")
        self._check_dim(dim)
        return batch_size

    def _check_dim(self, dim: int | None) -> None:
        if dim is not None and not (isinstance(dim, int) and 1 <= dim <= self.embed_dim):
            raise ValueError(f"dim={dim!r}: must be an integer in 1..{self.embed_dim} (embed_dim)")

    def _finish(self, parts: list[torch.Tensor], dim: int | None) -> torch.Tensor:
        emb = torch.cat(parts) if parts else torch.zeros(0, self.embed_dim)
        # The model's embeddings are already L2-normalized: only a prefix is re-normalized.
        return truncate_embedding(emb, dim) if dim is not None else emb.float().cpu()

    def _images(self, images: Sequence[Any]) -> torch.Tensor:
        """[N, 3, S, S]; a None entry is the all-zero image, as training and ``pinclip embed``."""
        out = torch.zeros((len(images), 3, self.image_size, self.image_size), dtype=torch.float32)
        for i, image in enumerate(images):
            if image is not None:
                # load_rgb opens paths with pinclip.transforms.open_image (the pixel cap) and converts to RGB.
                out[i] = self.image_transform(load_rgb(image))
        return out.to(self.device)

    def _text(self, texts: Sequence[str | None], with_vlm: bool = True) -> dict:
        """The text inputs of the model; None is the empty caption.

        A frozen text tower's token features are computed on the fly and rounded to
        ``text_features_dtype`` (float16 for a model exported from a run): the trainer's text cache
        stores them in float16, and ``pinclip embed`` of the run reads that cache. Without the same
        rounding the text embeddings of the 2-step test run differ from the run's by 1.05e-4 (fused
        2.9e-5); with it by 0 (fused 2e-7). The ids are padded to the full context length, as the
        cache pads them."""
        enc = self.tokenizer(list(texts))
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        vlm = {}
        if with_vlm and self.vlm_tokenizer is not None:   # the fusion reads the joint VLM embedding
            vlm = {k: v.to(self.device) for k, v in self.vlm_tokenizer(list(texts)).items()}
        if self.text_features_dtype is not None and self.model.text.frozen:
            feats = self.model.text_features(ids, mask, dtype=self.text_features_dtype)
            return {"text_features": feats["tokens"], "text_mask": feats["mask"], **vlm}
        return {"input_ids": ids, "attention_mask": mask, **vlm}

    def _autocast(self):
        return autocast(self.device.type, self.precision)

    # -- embeddings -----------------------------------------------------------------------------
    @torch.no_grad()
    def encode_image(self, images: Sequence[Any], *, batch_size: int = 64, dim: int | None = None) -> torch.Tensor:
        """images: PIL images or paths (str / Path). Returns float32 [N, D] (or [N, dim])."""
        batch_size = self._check(dim, batch_size)
        parts = []
        for i in range(0, len(images), batch_size):
            x = self._images(images[i:i + batch_size])
            with self._autocast():
                parts.append(self.model.encode_image(x)["image_emb"].float().cpu())
        return self._finish(parts, dim)

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str | None], *, batch_size: int = 256,
                    dim: int | None = None) -> torch.Tensor:
        """texts: captions (None = the empty caption). Returns float32 [N, D] (or [N, dim])."""
        batch_size = self._check(dim, batch_size)
        if isinstance(texts, str):
            raise TypeError("encode_text takes a list of strings, not one string")
        parts = []
        for i in range(0, len(texts), batch_size):
            text = self._text(texts[i:i + batch_size], with_vlm=False)   # the text head reads no VLM
            with self._autocast():
                out = self.model.encode_text(text.get("input_ids"), text.get("attention_mask"),
                                             text.get("text_features"), text.get("text_mask"))
            parts.append(out["text_emb"].float().cpu())
        return self._finish(parts, dim)

    @torch.no_grad()
    def encode_pins(self, images: Sequence[Any] | None = None, texts: Sequence[str | None] | None = None, *,
                    batch_size: int = 64, dim: int | None = None) -> torch.Tensor:
        """Fused embeddings of pins: ``images[i]`` (PIL, path or None) with ``texts[i]`` (str or
        None). A missing image is the all-zero image and a missing text the empty caption, exactly
        as training and ``pinclip embed`` encode such pins; one of the lists may be omitted (all
        missing). Returns float32 [N, D] (or [N, dim])."""
        batch_size = self._check(dim, batch_size)
        if images is None and texts is None:
            raise ValueError("encode_pins needs images, texts or both")
        n = len(images) if images is not None else len(texts)
        images = list(images) if images is not None else [None] * n
        texts = list(texts) if texts is not None else [None] * n
        if len(images) != len(texts):
            raise ValueError(f"encode_pins: {len(images)} images but {len(texts)} texts")
        parts = []
        for i in range(0, n, batch_size):
            x = self._images(images[i:i + batch_size])
            text = self._text(texts[i:i + batch_size])
            with self._autocast():
                parts.append(self.model(x, **text)["fused_emb"].float().cpu())
        return self._finish(parts, dim)
