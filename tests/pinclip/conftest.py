"""Fixtures for the model library tests: tiny configs and tiny random Hugging Face checkpoints.

Nothing here touches the network: checkpoints are random ``transformers`` models written by
:mod:`pinclip.testing.tiny_checkpoints` (the one definition of the tiny Hugging Face models) into a
temporary folder, once per session.
"""
import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import pytest  # noqa: E402
import torch  # noqa: E402


def tiny_config(**over) -> dict:
    """Width 32, 2 layers, 32 px images, scratch text: milliseconds per forward."""
    cfg = {
        "name": "tiny-test",
        "embed_dim": 16,
        "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
        "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 2, "heads": 2,
                 "vocab_size": 30522, "freeze": "train_all"},
        "fusion": {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2,
                   "patch_layers": [1, 2], "use_global": True, "use_text_tokens": True},
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def tiny_cfg():
    return tiny_config()


def random_text(batch: int, length: int = 12, vocab: int = 30522, generator=None):
    """Random token ids [B, L] long with a padding mask of varying lengths (3..L real tokens)."""
    ids = torch.randint(1000, vocab, (batch, length), generator=generator)
    lengths = 3 + torch.arange(batch) % (length - 2)
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


# The families the tower tests use (qwen3_vl is covered by test_tiny_checkpoints.py).
HF_FAMILIES = ("clip", "clip_vision", "siglip", "qwen2_vl_vision", "qwen2_vl", "bert")


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """{family: folder} of the tiny random checkpoints of :mod:`pinclip.testing.tiny_checkpoints`:
    ``clip`` (a full CLIPModel + CLIPProcessor), ``clip_vision``, ``siglip`` (vision towers + image
    processors), ``qwen2_vl_vision``, ``qwen2_vl`` (the full VLM), ``bert`` (with the MiniLM tokenizer)."""
    from pinclip.testing.tiny_checkpoints import write_tiny_checkpoints
    paths = write_tiny_checkpoints(tmp_path_factory.mktemp("hf"), HF_FAMILIES, seed=0)
    return {k: str(v) for k, v in paths.items()}
