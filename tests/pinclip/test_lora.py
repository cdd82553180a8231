"""Fine-tuning big towers: LoRA adapters through peft (trainable, saved, merged on save),
gradient checkpointing (same gradients), on the tiny random Hugging Face checkpoints."""
from __future__ import annotations

import pytest
import torch

import pinclip
from pinclip.config import ConfigError
from pinclip.factory import create_model, get_tokenizer, get_vlm_tokenizer
from pinclip.lora import has_lora, lora_parameter_count, merge_lora

FUSION = {"width": 32, "heads": 2, "num_queries": 2, "layers": 1, "patch_layers": [-1], "zero_init_early": False}


def _model(hf, vision_lora=None, vlm=True, **over):
    kw = dict(embed_dim=16, matryoshka_dims=[],
              vision={"type": "hf_clip", "pretrained": hf["clip_vision"], "image_size": 32, "freeze": "frozen",
                      "lora": vision_lora or {"rank": 4}},
              text={"type": "hf", "pretrained": hf["bert"], "freeze": "frozen"},
              fusion={**FUSION, "use_vlm": vlm})
    if vlm:
        kw["vlm"] = {"pretrained": hf["qwen2_vl"], "image_size": 32, "lora": {"rank": 2, "target_modules": ["q_proj",
                                                                                                        "v_proj"]}}
    kw.update(over)
    return create_model("pinclip-tiny-demo", **kw)


def _inputs(model, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    captions = ["a red bag", "blue shoes", None][:n]
    out = {"images": torch.randn(n, 3, 32, 32, generator=g), **dict(get_tokenizer(model)(captions))}
    vlm = get_vlm_tokenizer(model)
    return {**out, **(vlm(captions) if vlm is not None else {})}


def _randomize_adapters(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:       # peft starts B at zero: the adapted model equals the base one
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def test_adapters_train_and_the_base_weights_stay_frozen(hf_checkpoints):
    model = _model(hf_checkpoints)
    assert has_lora(model) and not model.visual.frozen and not model.vlm.frozen
    # CLIP vision: 2 blocks x (q, k, v, out_proj, fc1, fc2); the VLM's 1 LM block: q_proj and v_proj.
    assert model.visual.lora_layers == 12 and model.vlm.lora_layers == 2
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n in trainable if n.startswith(("visual.", "vlm."))} == {
        n for n, _ in model.named_parameters() if n.startswith(("visual.", "vlm.")) and "lora_" in n}
    assert not any(n.startswith("text.") for n in trainable)
    _randomize_adapters(model)
    model.train()
    out = model(**_inputs(model))
    (out["fused_emb"].sum() + out["image_emb"].sum()).backward()
    for name, p in model.named_parameters():
        if "lora_" in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_train_last_n_still_holds_with_adapters(hf_checkpoints):
    model = _model(hf_checkpoints, vlm=False, vision={"type": "hf_clip", "pretrained": hf_checkpoints["clip_vision"],
                                                       "image_size": 32, "freeze": "train_last_n",
                                                       "unfreeze_last_n": 1, "lora": {"rank": 2}})
    trained_base = {n for n, p in model.visual.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trained_base and all(".layers.1." in n or "post_layernorm" in n for n in trained_base)


def test_merged_model_and_saved_directory_reproduce_the_adapted_model(hf_checkpoints, tmp_path):
    torch.manual_seed(0)
    model = _model(hf_checkpoints)
    _randomize_adapters(model)
    model.eval()
    inputs = _inputs(model)
    with torch.no_grad():
        ref = model(**inputs)
        merged = merge_lora(model)
        got = merged(**inputs)
    assert not has_lora(merged) and has_lora(model)          # the model itself keeps its adapters
    assert merged.config.vision.lora.rank == 0 and model.config.vision.lora.rank == 4
    for key in ("image_emb", "text_emb", "fused_emb"):
        assert torch.allclose(ref[key], got[key], atol=1e-5), key
    (tmp_path / "m").mkdir()
    model.save_pretrained(tmp_path / "m")
    enc = pinclip.load(tmp_path / "m")
    assert lora_parameter_count(enc.model) == 0 and enc.config.vlm.lora.rank == 0
    with torch.no_grad():
        loaded = enc.model(**inputs)
    assert torch.allclose(loaded["fused_emb"], ref["fused_emb"], atol=1e-5)
    same = merge_lora(model, in_place=True)  # no copy: the model itself is merged
    assert same is model and not has_lora(model) and model.config.vision.lora.rank == 0
    with torch.no_grad():
        assert torch.allclose(model(**inputs)["fused_emb"], ref["fused_emb"], atol=1e-5)


def test_lora_config_errors_name_the_key(hf_checkpoints):
    with pytest.raises(ConfigError, match="'vision.lora.target_modules'.*matches no linear layer"):
        _model(hf_checkpoints, vision_lora={"rank": 2, "target_modules": ["qkv"]}, vlm=False)
    with pytest.raises(ConfigError, match="'vision.lora.rank' = 2: adapters are for pretrained"):
        create_model("pinclip-tiny-demo", vision={"lora": {"rank": 2}})
    with pytest.raises(ConfigError, match="'text.lora.rank' must be >= 0"):
        create_model("pinclip-tiny-demo", text={"lora": {"rank": -1}})
    with pytest.raises(ConfigError, match="'vlm.lora.dropout' must be in"):
        create_model("pinclip-tiny-demo", vlm={"lora": {"dropout": 1.0}})


@pytest.mark.parametrize("vision", [
    {"type": "vit", "image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    {"type": "hf_clip", "image_size": 32, "freeze": "train_all"},
    {"type": "hf_qwen2vl", "image_size": 32, "freeze": "train_all"},
])
def test_gradient_checkpointing_gives_the_same_gradients(vision, hf_checkpoints):
    path = {"hf_clip": hf_checkpoints["clip_vision"], "hf_qwen2vl": hf_checkpoints["qwen2_vl_vision"]}
    if vision["type"] in path:
        vision = {**vision, "pretrained": path[vision["type"]]}
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = create_model("pinclip-tiny-demo", embed_dim=16, matryoshka_dims=[], fusion=FUSION,
                             vision={**vision, "gradient_checkpointing": checkpointing},
                             text={"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2,
                                   "freeze": "train_all", "gradient_checkpointing": checkpointing})
        tower = getattr(model.visual, "model", None)
        on = (tower.is_activation_checkpointing if tower is not None
              else model.visual.transformer.grad_checkpointing)
        assert on == checkpointing and model.text.transformer.grad_checkpointing == checkpointing
        model.train()
        out = model(**_inputs(model))
        out["fused_emb"].pow(2).sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    for name in grads[0]:
        assert torch.allclose(grads[0][name], grads[1][name], atol=1e-5), name
