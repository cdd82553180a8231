"""Fixtures for the model library tests: tiny configs and tiny random Hugging Face checkpoints.

Nothing here touches the network: checkpoints are random ``transformers`` models written with
``save_pretrained`` into a temporary folder, once per session.
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


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    """Tiny random CLIP / SigLIP / Qwen2-VL (vision-only and full VLM) / BERT checkpoints."""
    from transformers import (BertConfig, BertModel, CLIPConfig, CLIPImageProcessorPil, CLIPModel, CLIPVisionConfig,
                              CLIPVisionModel, Qwen2VLConfig, Qwen2VLForConditionalGeneration,
                              SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel)
    from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLVisionConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    paths = {}
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    paths["clip"] = root / "clip"
    CLIPVisionModel(CLIPVisionConfig(**vision)).save_pretrained(paths["clip"])
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        paths["clip"])
    paths["clip_full"] = root / "clip_full"  # a full CLIPModel: the vision part is taken
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100)
    CLIPModel(CLIPConfig(vision_config=vision, text_config=text)).save_pretrained(paths["clip_full"])
    paths["siglip"] = root / "siglip"
    SiglipVisionModel(SiglipVisionConfig(**vision)).save_pretrained(paths["siglip"])
    SiglipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(paths["siglip"])
    qv = dict(depth=2, embed_dim=32, hidden_size=48, num_heads=2, patch_size=8, spatial_merge_size=2,
              temporal_patch_size=2)
    paths["qwen2vl_vision"] = root / "qwen2vl_vision"
    Qwen2VisionTransformerPretrainedModel(Qwen2VLVisionConfig(**qv)).save_pretrained(paths["qwen2vl_vision"])
    paths["qwen2vl_full"] = root / "qwen2vl_full"
    text = dict(vocab_size=128, hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                num_attention_heads=2, num_key_value_heads=1,
                rope_parameters={"rope_type": "default", "mrope_section": [2, 2, 2], "rope_theta": 10000.0})
    Qwen2VLForConditionalGeneration(Qwen2VLConfig(vision_config=qv, text_config=text)).save_pretrained(
        paths["qwen2vl_full"])
    paths["bert"] = root / "bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(paths["bert"])
    return {k: str(v) for k, v in paths.items()}
