"""PinCLIP model: output shapes and normalization, granularity switches, cached text features,
freezing policies, gradients reaching every trainable parameter, Matryoshka, bf16 autocast."""
import pytest
import torch

from pinclip.factory import create_model
from pinclip.losses import PinCLIPLoss
from pinclip.model import autocast, truncate_embedding

from .conftest import random_text, tiny_config

B = 4


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(B, 3, 32, 32, generator=g)
    ids, mask = random_text(B, 12, generator=g)
    return images, ids, mask


def make(**over):
    torch.manual_seed(0)
    return create_model(tiny_config(**over)).eval()


def test_outputs_shapes_dtypes_and_normalization(batch):
    images, ids, mask = batch
    model = make()
    out = model(images, ids, mask)
    for key in ("image_emb", "text_emb", "fused_emb"):
        assert out[key].shape == (B, 16) and out[key].dtype == torch.float32
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(B))
    assert out["logit_scale"].shape == () and out["logit_scale"].item() == pytest.approx(1 / 0.07, rel=1e-3)
    assert out["neighbor_logit_scale"].shape == ()
    assert out["logit_bias"] is None
    siglip = make(loss={"image_text": "siglip"})(images, ids, mask)
    assert siglip["logit_bias"].item() == pytest.approx(-10.0) and siglip["logit_scale"].item() == pytest.approx(10.0, rel=1e-3)
    # partial inputs
    assert set(model(images)) >= {"image_emb"} and "fused_emb" not in model(images)
    assert "text_emb" in model(input_ids=ids, attention_mask=mask)


def test_scales_exist_only_for_used_loss_terms():
    """DDP rejects trainable parameters that get no gradient."""
    model = make(loss={"image_text": "none"})
    assert model.logit_scale is None and model.logit_bias is None and model.neighbor_logit_scale is not None
    model = make(loss={"neighbor_fused_weight": 0.0, "neighbor_image_weight": 0.0, "cross_modal": False})
    assert model.logit_scale is not None and model.neighbor_logit_scale is None
    assert model.scales()["neighbor_logit_scale"] is None


def test_logit_scale_is_clamped():
    model = make()
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    assert model.scales()["logit_scale"].item() == pytest.approx(100.0, rel=1e-4)


def test_image_embedding_is_content_only(batch):
    images, ids, mask = batch
    model = make()
    a = model(images, ids, mask)
    b = model(images, torch.roll(ids, 1, 0), torch.roll(mask, 1, 0))
    torch.testing.assert_close(a["image_emb"], b["image_emb"])
    assert not torch.allclose(a["fused_emb"], b["fused_emb"])


@pytest.mark.parametrize("switch, value", [
    ("use_global", False), ("region_grid", 0), ("patch_layers", [2]), ("patch_layers", []),
    ("use_text_tokens", False), ("early_fusion", False), ("late_fusion", False),
])
def test_each_granularity_switch_changes_the_fused_output(batch, switch, value):
    images, ids, mask = batch
    model = make()
    before = model(images, ids, mask)
    setattr(model.fusion, switch, value)
    after = model(images, ids, mask)
    assert not torch.allclose(before["fused_emb"], after["fused_emb"], atol=1e-5)
    torch.testing.assert_close(before["image_emb"], after["image_emb"])
    torch.testing.assert_close(after["fused_emb"].norm(dim=-1), torch.ones(B))


def test_switches_at_construction_and_ablations_run(batch):
    images, ids, mask = batch
    for fusion in ({"use_global": False}, {"region_grid": 0, "patch_layers": []},
                   {"early_fusion": False}, {"late_fusion": False}, {"use_text_tokens": False, "patch_pool": 2}):
        out = make(fusion=fusion)(images, ids, mask)
        assert out["fused_emb"].shape == (B, 16)
    model = make(fusion={"use_global": False})
    model.fusion.use_global = True
    with pytest.raises(ValueError, match="config built"):
        model(images, ids, mask)
    model = make(fusion={"late_fusion": False})
    model.fusion.late_fusion = True
    with pytest.raises(ValueError, match="config built"):
        model(images, ids, mask)


def test_region_and_patch_layers_read_only_needed_tower_layers():
    model = make(fusion={"patch_layers": [1], "region_grid": 2})
    assert model.fusion.required_layers() == [1, 2]
    model.fusion.region_grid = 0
    assert model.fusion.required_layers() == [1]


def test_padding_tokens_do_not_matter(batch):
    images, ids, mask = batch
    model = make()
    noisy = ids.clone()
    noisy[mask == 0] = 1234
    torch.testing.assert_close(model(images, ids, mask)["fused_emb"], model(images, noisy, mask)["fused_emb"])


def test_cached_text_features_match_the_text_tower(batch):
    images, ids, mask = batch
    model = make(text={"freeze": "frozen"})
    model.train()
    assert not model.text.training  # a frozen tower stays in eval mode
    direct = model(images, ids, mask)
    cache = model.text_features(ids, mask)
    assert cache["tokens"].dtype == torch.float16 and cache["tokens"].shape == (B, 12, 32)
    cached = model(images, text_features=cache["tokens"], text_mask=cache["mask"])
    for key in ("text_emb", "fused_emb"):
        torch.testing.assert_close(cached[key], direct[key], atol=2e-3, rtol=1e-2)
    exact = model(images, text_features=model.text_features(ids, mask, torch.float32)["tokens"], text_mask=mask)
    torch.testing.assert_close(exact["fused_emb"], direct["fused_emb"])


def _trainable(module):
    return {n for n, p in module.named_parameters() if p.requires_grad}


def test_freezing_policies():
    frozen = make(vision={"freeze": "frozen"}, text={"freeze": "frozen"})
    assert not _trainable(frozen.visual) and not _trainable(frozen.text)
    assert _trainable(frozen.fusion) and _trainable(frozen.image_proj)
    last = make(vision={"freeze": "train_last_n", "unfreeze_last_n": 1},
                text={"freeze": "train_last_n", "unfreeze_last_n": 1})
    assert _trainable(last.visual) and all(n.startswith(("transformer.resblocks.1.", "ln_post"))
                                           for n in _trainable(last.visual))
    assert all(n.startswith(("transformer.resblocks.1.", "ln_final")) for n in _trainable(last.text))
    everything = make()
    assert _trainable(everything.visual) == {n for n, _ in everything.visual.named_parameters()}


@pytest.mark.parametrize("image_text", ["clip", "siglip"])
def test_every_trainable_parameter_gets_a_gradient(batch, image_text):
    """DDP fails on trainable parameters without gradients; the full loss reaches all of them."""
    images, ids, mask = batch
    model = make(loss={"image_text": image_text}, matryoshka_dims=[4, 16]).train()
    s, k = 2, 2
    out = model(images[:s], ids[:s], mask[:s])
    nb = model(images, ids, mask)
    weights = torch.tensor([[2.0, 1.0], [1.0, 0.0]])
    losses = PinCLIPLoss.from_config(model.config)(out, nb, weights, None)
    losses["loss"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not missing


def test_matryoshka_truncation():
    x = torch.nn.functional.normalize(torch.randn(3, 16), dim=-1)
    t = truncate_embedding(x, 4)
    assert t.shape == (3, 4)
    torch.testing.assert_close(t.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(truncate_embedding(x, 16), x)


def test_bf16_autocast_forward_backward_on_cpu(batch):
    images, ids, mask = batch
    model = make().train()
    with autocast("cpu", "bf16"):
        out = model(images, ids, mask)
        loss = PinCLIPLoss.from_config(model.config)(out)["loss"]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(out[k].dtype == torch.float32 for k in ("image_emb", "text_emb", "fused_emb"))
    torch.testing.assert_close(out["fused_emb"].norm(dim=-1), torch.ones(B))
    # the loss itself runs in float32 inside autocast: same value as outside
    detached = {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    with autocast("cpu", "bf16"):
        inside = PinCLIPLoss.from_config(model.config)(detached)["loss"]
    torch.testing.assert_close(inside, PinCLIPLoss.from_config(model.config)(detached)["loss"])
    loss.backward()
    assert model.visual.conv1.weight.grad is not None
    with pytest.raises(ValueError, match="precision"):
        autocast("cpu", "fp8")
    assert isinstance(autocast("cpu"), type(autocast("cpu", "fp32")))  # auto = fp32 on CPU


def test_wrong_image_size_is_reported(batch):
    model = make()
    with pytest.raises(ValueError, match="32x32"):
        model(torch.randn(1, 3, 48, 48))


def test_preserve_geometry_init_keeps_inner_products():
    from pinclip.model import preserve_geometry_
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    wide = preserve_geometry_(torch.empty(12, 8))            # out >= in: the identity, zero-padded
    torch.testing.assert_close(x @ wide.T, torch.cat([x, torch.zeros(5, 4)], dim=1))
    torch.manual_seed(0)
    narrow = preserve_geometry_(torch.empty(4, 8))           # out < in: orthonormal rows, rescaled
    torch.testing.assert_close(narrow @ narrow.T, 2.0 * torch.eye(4))


def test_passthrough_init_starts_the_fused_embedding_at_the_towers_mix(batch):
    """zero_init_early + image_share_init s: at step 0 the fused embedding is exactly the late mix
    normalize(s * image_emb + (1 - s) * text_emb) of the two heads, and projection_init=preserve
    makes the text head the (LayerNorm'd) pooled text tower output itself."""
    images, ids, mask = batch
    for s in (0.1, 0.5, 0.9):
        model = make(embed_dim=32, projection_init="preserve",
                     fusion={"zero_init_early": True, "image_share_init": s})
        out = model(images, ids, mask)
        expected = torch.nn.functional.normalize(s * out["image_emb"] + (1 - s) * out["text_emb"], dim=-1)
        torch.testing.assert_close(out["fused_emb"], expected)
    text = model.encode_text(ids, mask)
    pooled = model.text(ids, mask)["pooled"]
    torch.testing.assert_close(text["text_vec"], model.text_proj[0](pooled))   # identity Linear, zero bias
    default = make()(images, ids, mask)
    mix = torch.nn.functional.normalize(0.5 * default["image_emb"] + 0.5 * default["text_emb"], dim=-1)
    assert not torch.allclose(default["fused_emb"], mix, atol=1e-3)   # default: early fusion is not silent


@pytest.mark.parametrize("value", [0.0, 1.0, -0.2])
def test_image_share_init_must_be_a_proper_share(value):
    from pinclip.config import ConfigError
    with pytest.raises(ConfigError, match=r"fusion\.image_share_init.*strictly between 0 and 1"):
        make(fusion={"image_share_init": value})


def test_conv_stem_keeps_the_token_grid_and_trains(batch):
    """The hybrid ViT's convolutional stem: the same token grid and outputs as patchify, every
    stem parameter reached by the loss (DDP needs it), and its save/load round trip."""
    images, ids, mask = batch
    model = make(vision={"stem": "conv"}).train()
    plain = make()
    out, ref = model(images, ids, mask), plain(images, ids, mask)
    assert {k: v.shape for k, v in out.items() if torch.is_tensor(v)} == {
        k: v.shape for k, v in ref.items() if torch.is_tensor(v)}
    stem = model.visual.conv1
    assert len([m for m in stem.modules() if isinstance(m, torch.nn.Conv2d)]) == 3 + 1  # patch 8: 3 stride-2 + 1x1
    losses = PinCLIPLoss.from_config(model.config)(out, None, None, None)
    losses["loss"].backward()
    assert all(p.grad is not None and p.grad.any() for p in stem.parameters())
    clone = make(vision={"stem": "conv"})
    clone.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone.eval()(images, ids, mask)["image_emb"], model.eval()(images, ids, mask)["image_emb"])


def test_grid_readout_keeps_where_things_are_in_the_image(batch):
    """vision.readout_grid g: the image-level output is the class token and a g x g grid of pooled
    last-block patch tokens; moving a stroke to another quadrant changes that quadrant's cell."""
    images, ids, mask = batch
    model = make(vision={"readout_grid": 2})
    tower = model.visual
    assert tower.global_width == 32 * (1 + 4)
    out = tower(images)
    assert out["global"].shape == (B, 32 * 5)
    plain = make()
    torch.testing.assert_close(out["global"][:, :32], plain.visual(images)["global"])   # the class token first
    blank = torch.zeros(2, 3, 32, 32)
    blank[0, :, 2:6, 2:6] = 3.0      # a blob in the top-left quadrant
    blank[1, :, 2:6, 26:30] = 3.0    # the same blob top right
    with torch.no_grad():
        cells = tower(blank)["global"][:, 32:].reshape(2, 4, 32)   # raster order: TL, TR, BL, BR
    moved = (cells[0] - cells[1]).norm(dim=-1)
    assert moved[0] > 0.1 and moved[1] > 0.1          # the two quadrants the blob left and entered
    assert model(images, ids, mask)["image_emb"].shape == (B, 16)
    from pinclip.config import ConfigError
    with pytest.raises(ConfigError, match=r"vision\.readout_grid.*patch grid's 4"):
        make(vision={"readout_grid": 5})


def test_batch_image_norm_removes_what_every_image_shares_and_round_trips(tmp_path, batch):
    """image_norm=batch: a vector added to every image's tower output leaves the training batch's
    image embeddings unchanged (LayerNorm's are not); eval uses the running statistics, which
    a saved model directory keeps."""
    import pinclip
    images, ids, mask = batch
    model = make(image_norm="batch").train()
    assert isinstance(model.image_proj[0], torch.nn.BatchNorm1d)
    g = torch.randn(8, model.visual.global_width, generator=torch.Generator().manual_seed(3))
    shared = 5.0 * torch.randn(model.visual.global_width, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model.image_proj(g + shared), model.image_proj(g), atol=1e-4, rtol=1e-4)
    layer = make()
    assert not torch.allclose(layer.image_proj(g + shared), layer.image_proj(g), atol=1e-2)
    for _ in range(3):
        model(images, ids, mask)          # training forwards update the running statistics
    assert model.image_proj[0].running_mean.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        one = model(images[:1], ids[:1], mask[:1])["image_emb"]      # eval: one image is fine
        torch.testing.assert_close(one, model(images, ids, mask)["image_emb"][:1], atol=1e-5, rtol=1e-5)
    out = tmp_path / "model"
    out.mkdir()
    pinclip.save_pretrained(model, out)
    loaded = pinclip.load(out).model
    torch.testing.assert_close(loaded.image_proj[0].running_mean, model.image_proj[0].running_mean)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images, ids, mask)["image_emb"], model(images, ids, mask)["image_emb"])
    from pinclip.config import ConfigError
    with pytest.raises(ConfigError, match="image_norm"):
        make(image_norm="group")
