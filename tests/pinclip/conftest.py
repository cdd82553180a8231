"""Fixtures for the model library tests: tiny configs. The tiny random Hugging Face checkpoints
(``hf_checkpoints``) are a suite-wide fixture of ``tests/conftest.py``."""
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
