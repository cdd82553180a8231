"""The joint VLM encoder (pinclip.vlm) on the tiny random Qwen2-VL and Qwen3-VL checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pinclip.config import ConfigError
from pinclip.factory import create_model, get_tokenizer, get_vlm_tokenizer
from pinclip.transforms import normalize, to_tensor
from pinclip.vlm import JointVLMEncoder, renormalize


@pytest.fixture
def qwen_vl(hf_checkpoints):
    """The full Qwen-VL checkpoints: qwen2_vl, and qwen3_vl where transformers has it."""
    return {k: v for k, v in hf_checkpoints.items() if k in ("qwen2_vl", "qwen3_vl")}


def test_prompt_tokenizer_left_pads_and_cuts(qwen_vl):
    enc = JointVLMEncoder(qwen_vl["qwen2_vl"], image_size=32, max_text_tokens=5)
    assert enc.image_tokens == 4                   # (32 / 8)^2 patches / 2^2 merged
    out = enc.tokenizer(["abcdefghij", None, "ab"])
    ids, mask = out["vlm_input_ids"], out["vlm_attention_mask"]
    assert ids.shape == mask.shape and ids.dtype == torch.long
    lengths = mask.sum(dim=1).tolist()
    assert lengths[0] - lengths[1] == 5 and lengths[2] - lengths[1] == 2    # the caption cut to 5 tokens
    assert bool(mask[:, -1].all())                 # left padding: the last position is real in every row
    assert ((ids == enc.tokenizer.image_pad_id).sum(dim=1) == 4).all()
    text = enc.tokenizer.tokenizer.decode(ids[2][mask[2].bool()])
    assert text.startswith("<|im_start|>system\nRepresent the user's input.<|im_end|>")
    assert text.endswith("<|vision_end|>ab<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_matches_the_processor_pipeline_and_ignores_padding(family, qwen_vl):
    """Our patchify and prompt give the hidden state that the checkpoint's own image processor and
    tokenizer give (transformers' reference path), and batching with left padding changes no row."""
    if family not in qwen_vl:
        pytest.skip(f"{family} not supported by the installed transformers")
    from pinclip.testing.tiny_checkpoints import qwen_vl_inputs
    enc = JointVLMEncoder(qwen_vl[family], image_size=32).eval()
    rng = np.random.default_rng(0)
    pics = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(2)]
    captions = ["a red bag on a table", "x"]
    images = torch.stack([normalize(to_tensor(p), enc.image_mean, enc.image_std) for p in pics])
    batch = enc.tokenizer(captions)
    with torch.no_grad():
        ours = enc(images, batch["vlm_input_ids"], batch["vlm_attention_mask"])
        for i, (pic, caption) in enumerate(zip(pics, captions)):
            prompt = (f"<|im_start|>system\n{enc.tokenizer.instruction}<|im_end|>\n<|im_start|>user\n"
                      f"<|vision_start|><|image_pad|><|vision_end|>{caption}<|im_end|>\n<|im_start|>assistant\n")
            ref_inputs = qwen_vl_inputs(qwen_vl[family], [pic], prompt)
            ref = enc.model(**ref_inputs).last_hidden_state[0, -1]
            assert torch.allclose(ours[i], ref, atol=1e-5), (ours[i] - ref).abs().max()


def test_renormalize_round_trips():
    x = torch.rand(2, 3, 4, 4)
    a = normalize(x, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
    b = renormalize(a, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3), (0.1, 0.2, 0.3), (0.5, 0.5, 0.5))
    assert torch.allclose(b, normalize(x, (0.1, 0.2, 0.3), (0.5, 0.5, 0.5)), atol=1e-6)


def _joint(path, **over):
    return create_model("pinclip-tiny-demo", embed_dim=16, matryoshka_dims=[], vision={"image_size": 32, "patch_size": 8,
                        "width": 32, "layers": 2, "heads": 2},
                        text={"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2},
                        vlm={"pretrained": path, "image_size": 32},
                        fusion={"width": 32, "heads": 2, "num_queries": 2, "layers": 1, "use_vlm": True,
                                "zero_init_early": False, "patch_layers": [-1]}, **over)


def test_the_vlm_is_a_fusion_granularity(qwen_vl):
    torch.manual_seed(0)
    model = _joint(qwen_vl["qwen2_vl"])
    assert get_vlm_tokenizer(model) is model.vlm.tokenizer
    captions = ["a red bag", "blue shoes", None]
    images = torch.randn(3, 3, 32, 32)
    text = dict(get_tokenizer(model)(captions))
    vlm = get_vlm_tokenizer(model)(captions)
    out = model(images, **text, **vlm)
    # The fused embedding reads the VLM: other VLM prompts change it, the image and text embeddings not.
    other = model(images, **text, **get_vlm_tokenizer(model)(["zzz", "qqq", "www"]))
    assert (out["fused_emb"] - other["fused_emb"]).abs().max() > 1e-4
    assert torch.equal(out["image_emb"], other["image_emb"]) and torch.equal(out["text_emb"], other["text_emb"])
    out["fused_emb"].sum().backward()
    assert all(p.grad is None for p in model.vlm.parameters())          # frozen by default
    assert model.fusion.vlm_proj[1].weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="vlm_input_ids"):
        model(images, **text)
    # Without use_vlm the model needs no VLM ids.
    assert get_vlm_tokenizer(_joint(qwen_vl["qwen2_vl"], **{"fusion.use_vlm": False})) is None


def test_train_last_n_trains_the_last_language_blocks(qwen_vl):
    model = _joint(qwen_vl["qwen2_vl"], **{"vlm.freeze": "train_last_n", "vlm.unfreeze_last_n": 1})
    trainable = {n for n, p in model.vlm.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("model.language_model.layers.0.", "model.language_model.norm"))
                             for n in trainable)


def test_config_errors_name_the_key(qwen_vl, hf_checkpoints):
    with pytest.raises(ConfigError, match="'fusion.use_vlm' is on but 'vlm.pretrained' is not set"):
        create_model("pinclip-tiny-demo", fusion={"use_vlm": True})
    with pytest.raises(ConfigError, match="'vlm.max_text_tokens' must be an integer >= 1"):
        create_model("pinclip-tiny-demo", vlm={"pretrained": qwen_vl["qwen2_vl"], "max_text_tokens": 0})
    with pytest.raises(ConfigError, match="vlm.pretrained.*'clip' checkpoint"):
        _joint(hf_checkpoints["clip"])
    with pytest.raises(ConfigError, match="'vlm.image_size' = 30 must be a multiple of"):
        _joint(qwen_vl["qwen2_vl"], **{"vlm.image_size": 30})
    with pytest.raises(ConfigError, match="vlm.pretrained"):
        _joint("/no/such/vlm")


def test_saved_model_dir_reproduces_the_fused_embedding(qwen_vl, tmp_path):
    import pinclip
    torch.manual_seed(0)
    model = _joint(qwen_vl["qwen2_vl"]).eval()
    (tmp_path / "m").mkdir()
    model.save_pretrained(tmp_path / "m", text_features_dtype=None)
    enc = pinclip.load(tmp_path / "m")
    rng = np.random.default_rng(1)
    pics = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(3)]
    captions = ["a", "bb cc", None]
    got = enc.encode_pins(pics, captions)
    images = torch.stack([enc.image_transform(p) for p in pics])
    with torch.no_grad():
        ref = model(images, **dict(get_tokenizer(model)(captions)), **get_vlm_tokenizer(model)(captions))["fused_emb"]
    assert torch.allclose(got, ref, atol=1e-5)
    assert (tmp_path / "m" / "vlm" / "config.json").is_file()


def test_text_only_rows_ignore_their_image(qwen_vl):
    """A prompt without the image (has_image False) is the text-only chat turn: its row matches
    the text-only prompt run alone and does not depend on that row's pixels."""
    enc = JointVLMEncoder(qwen_vl["qwen2_vl"], image_size=32).eval()
    images = torch.randn(3, 3, 32, 32)
    batch = enc.tokenizer(["a cat", "a dog", None], has_image=[True, False, True])
    assert (batch["vlm_input_ids"] == enc.tokenizer.image_pad_id).sum(dim=1).tolist() == [4, 0, 4]
    with torch.no_grad():
        mixed = enc(images, batch["vlm_input_ids"], batch["vlm_attention_mask"])
        other = images.clone()
        other[1] = 5.0
        again = enc(other, batch["vlm_input_ids"], batch["vlm_attention_mask"])
        tok = enc.tokenizer.tokenizer
        ids = tok("<|im_start|>system\nRepresent the user's input.<|im_end|>\n<|im_start|>user\na dog<|im_end|>\n"
                  "<|im_start|>assistant\n", return_tensors="pt")["input_ids"]
        ref = enc.model(input_ids=ids, mm_token_type_ids=torch.zeros_like(ids)).last_hidden_state[0, -1]
    assert torch.equal(mixed, again)
    assert torch.allclose(mixed[1], ref, atol=1e-5)
    with pytest.raises(ValueError, match="has_image"):
        enc.tokenizer(["a"], has_image=[True, False])
