"""Losses against straightforward loop references, masks, chunking, gradients, the weighted total."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, strategies as st

from pinclip.config import LossConfig
from pinclip.losses import (ClipLoss, NeighborAlignmentLoss, PinCLIPLoss, SigLipLoss, clip_loss,
                            neighbor_alignment_loss, positive_mask_from_ids, siglip_loss)


def unit(*shape, generator=None, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, generator=generator, dtype=dtype), dim=-1)


# -- references: loops over pairs ---------------------------------------------------------------

def ref_clip(img, txt, scale, mask=None):
    n = img.shape[0]
    mask = torch.eye(n, dtype=torch.bool) if mask is None else mask
    total = 0.0
    for direction in (0, 1):
        for i in range(n):
            row = [scale * float(img[i] @ txt[j]) if direction == 0 else scale * float(txt[i] @ img[j])
                   for j in range(n)]
            lse = math.log(sum(math.exp(v) for v in row))
            pos = [j for j in range(n) if (mask[i, j] if direction == 0 else mask[j, i])]
            if pos:
                total += sum(lse - row[j] for j in pos) / len(pos) / n
    return total / 2


def ref_siglip(img, txt, scale, bias, mask=None):
    n = img.shape[0]
    total = 0.0
    for i in range(n):
        for j in range(n):
            label = 1.0 if (i == j if mask is None else mask[i, j]) else -1.0
            logit = scale * float(img[i] @ txt[j]) + bias
            total += -math.log(1 / (1 + math.exp(-label * logit)))
    return total / n


def ref_neighbor(q, keys, w, fn, scale, exclude_own=True, extra=None, extra_mask=None):
    s, k = w.shape
    keys = keys.reshape(s * k, -1)
    extra = torch.zeros(0, keys.shape[1]) if extra is None else extra
    num_seeds = sum(1 for a in range(s) if any(w[a, b] > 0 for b in range(k)))
    total = 0.0
    for a in range(s):
        wsum = sum(float(w[a, b]) for b in range(k) if w[a, b] > 0)
        for b in range(k):
            if w[a, b] <= 0:
                continue
            target = a * k + b
            cols = [target]
            for c in range(s * k):
                if c == target or w[c // k, c % k] <= 0:
                    continue
                if fn is not None and fn[a, c]:
                    continue
                if exclude_own and c // k == a:
                    continue
                cols.append(c)
            logits = [scale * float(q[a] @ keys[c]) for c in cols]
            logits += [scale * float(q[a] @ extra[m]) for m in range(extra.shape[0])
                       if extra_mask is None or not extra_mask[a, m]]
            lse = math.log(sum(math.exp(v) for v in logits))
            total += float(w[a, b]) / wsum * (lse - logits[0])
    return total / max(num_seeds, 1)


# -- image-text ------------------------------------------------------------------------------------

@given(n=st.integers(1, 7), d=st.integers(2, 9), seed=st.integers(0, 10_000),
       scale=st.floats(0.5, 30.0), use_mask=st.booleans())
def test_clip_loss_matches_loop_reference(n, d, seed, scale, use_mask):
    g = torch.Generator().manual_seed(seed)
    img, txt = unit(n, d, generator=g), unit(n, d, generator=g)
    mask = None
    if use_mask:
        groups = torch.randint(0, 3, (n,), generator=g)
        mask = positive_mask_from_ids(groups)
    got = clip_loss(img, txt, torch.tensor(scale), positive_mask=mask)
    assert got.shape == () and got.dtype == torch.float32
    assert got.item() == pytest.approx(ref_clip(img, txt, scale, mask), rel=1e-4, abs=1e-5)


def test_clip_loss_is_open_clip_convention():
    g = torch.Generator().manual_seed(0)
    img, txt = unit(6, 8, generator=g), unit(6, 8, generator=g)
    logits = 10.0 * img @ txt.T
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    torch.testing.assert_close(clip_loss(img, txt, 10.0), expected)
    # identity mask == no mask
    torch.testing.assert_close(clip_loss(img, txt, 10.0, torch.eye(6, dtype=torch.bool)), expected)


@given(n=st.integers(1, 7), d=st.integers(2, 9), seed=st.integers(0, 10_000), scale=st.floats(0.5, 20.0),
       bias=st.floats(-10.0, 2.0), use_mask=st.booleans(), chunk=st.sampled_from([None, 1, 2, 3]))
def test_siglip_loss_matches_loop_reference(n, d, seed, scale, bias, use_mask, chunk):
    g = torch.Generator().manual_seed(seed)
    img, txt = unit(n, d, generator=g), unit(n, d, generator=g)
    mask = positive_mask_from_ids(torch.randint(0, 3, (n,), generator=g)) if use_mask else None
    got = siglip_loss(img, txt, torch.tensor(scale), torch.tensor(bias), positive_mask=mask, chunk_size=chunk)
    assert got.item() == pytest.approx(ref_siglip(img, txt, scale, bias, mask), rel=1e-4, abs=1e-5)


def test_siglip_chunked_gradients_equal_full():
    g = torch.Generator().manual_seed(1)
    img = unit(9, 5, generator=g).requires_grad_()
    txt = unit(9, 5, generator=g).requires_grad_()
    scale = torch.tensor(10.0, requires_grad=True)
    bias = torch.tensor(-3.0, requires_grad=True)
    grads = []
    for chunk in (None, 4):
        loss = siglip_loss(img, txt, scale, bias, chunk_size=chunk)
        grads.append(torch.autograd.grad(loss, (img, txt, scale, bias)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_image_text_gradcheck():
    g = torch.Generator().manual_seed(2)
    img = torch.randn(4, 3, generator=g, dtype=torch.double, requires_grad=True)
    txt = torch.randn(4, 3, generator=g, dtype=torch.double, requires_grad=True)
    scale = torch.tensor(3.0, dtype=torch.double, requires_grad=True)
    bias = torch.tensor(-1.0, dtype=torch.double, requires_grad=True)
    mask = positive_mask_from_ids(torch.tensor([0, 1, 0, 2]))
    n = lambda x: F.normalize(x, dim=-1)  # noqa: E731
    assert clip_loss(n(img), n(txt), scale).dtype == torch.double
    assert torch.autograd.gradcheck(lambda i, t, s: clip_loss(n(i), n(t), s, mask), (img, txt, scale))
    for chunk in (None, 3):
        assert torch.autograd.gradcheck(
            lambda i, t, s, b: siglip_loss(n(i), n(t), s, b, mask, chunk_size=chunk), (img, txt, scale, bias))


def test_loss_modules_return_named_dicts():
    g = torch.Generator().manual_seed(3)
    img, txt = unit(5, 4, generator=g), unit(5, 4, generator=g)
    out = ClipLoss()(img, txt, torch.tensor(5.0))
    assert set(out) == {"clip_loss"}
    torch.testing.assert_close(out["clip_loss"], clip_loss(img, txt, 5.0))
    ids = torch.tensor([0, 0, 1, 2, 2])
    torch.testing.assert_close(ClipLoss()(img, txt, 5.0, positive_ids=ids)["clip_loss"],
                               clip_loss(img, txt, 5.0, positive_mask_from_ids(ids)))
    out = SigLipLoss(chunk_size=2)(img, txt, torch.tensor(5.0), torch.tensor(-2.0))
    assert set(out) == {"siglip_loss"}
    torch.testing.assert_close(out["siglip_loss"], siglip_loss(img, txt, 5.0, -2.0))


def test_low_precision_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(4)
    img, txt = unit(6, 8, generator=g), unit(6, 8, generator=g)
    full = clip_loss(img, txt, 10.0)
    half = clip_loss(img.bfloat16(), txt.bfloat16(), 10.0)
    assert half.dtype == torch.float32
    assert half.item() == pytest.approx(full.item(), rel=2e-2)


# -- neighbor alignment ----------------------------------------------------------------------------

def _neighbor_inputs(s, k, d, seed, pad=True, fn=True):
    g = torch.Generator().manual_seed(seed)
    w = torch.randint(1, 6, (s, k), generator=g).float()
    if pad:
        w[torch.rand(s, k, generator=g) < 0.3] = 0
    mask = torch.rand(s, s * k, generator=g) < 0.2 if fn else None
    emb = {name: unit(*shape, generator=g) for name, shape in
           [("seed_fused", (s, d)), ("neighbor_fused", (s, k, d)), ("seed_image", (s, d)),
            ("neighbor_image", (s, k, d)), ("seed_text", (s, d)), ("neighbor_text", (s, k, d))]}
    return emb, w, mask


@given(s=st.integers(1, 5), k=st.integers(1, 4), d=st.integers(2, 6), seed=st.integers(0, 10_000),
       pad=st.booleans(), fn=st.booleans(), exclude_own=st.booleans(), scale=st.floats(1.0, 20.0),
       num_extra=st.sampled_from([0, 1, 3]))
def test_neighbor_alignment_matches_loop_reference(s, k, d, seed, pad, fn, exclude_own, scale, num_extra):
    e, w, mask = _neighbor_inputs(s, k, d, seed, pad, fn)
    g = torch.Generator().manual_seed(seed + 1)
    negatives = {key: unit(num_extra, d, generator=g) for key in ("fused_emb", "image_emb", "text_emb")}
    negative_mask = torch.rand(s, num_extra, generator=g) < 0.3
    out = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, torch.tensor(scale),
                                  seed_image=e["seed_image"], neighbor_image=e["neighbor_image"],
                                  seed_text=e["seed_text"], neighbor_text=e["neighbor_text"],
                                  exclude_own_neighbors=exclude_own, image_image=True,
                                  negatives=negatives if num_extra else None, negative_mask=negative_mask)
    assert set(out) == {"neighbor_fused_loss", "neighbor_image_loss", "neighbor_cross_modal_loss",
                        "neighbor_image_image_loss"}

    def ref(q, keys, modality):
        return ref_neighbor(q, keys, w, mask, scale, exclude_own, negatives[modality], negative_mask)

    assert out["neighbor_fused_loss"].item() == pytest.approx(
        ref(e["seed_fused"], e["neighbor_fused"], "fused_emb"), rel=1e-4, abs=1e-5)
    assert out["neighbor_image_loss"].item() == pytest.approx(
        ref(e["seed_fused"], e["neighbor_image"], "image_emb"), rel=1e-4, abs=1e-5)
    assert out["neighbor_image_image_loss"].item() == pytest.approx(
        ref(e["seed_image"], e["neighbor_image"], "image_emb"), rel=1e-4, abs=1e-5)
    cross = (ref(e["seed_image"], e["neighbor_text"], "text_emb")
             + ref(e["seed_text"], e["neighbor_image"], "image_emb")) / 2
    assert out["neighbor_cross_modal_loss"].item() == pytest.approx(cross, rel=1e-4, abs=1e-5)


def test_neighbor_alignment_flat_and_3d_neighbors_agree_and_cross_modal_switch():
    e, w, mask = _neighbor_inputs(4, 3, 5, 0)
    a = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 10.0)
    b = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"].reshape(12, 5), w, mask, 10.0)
    torch.testing.assert_close(a, b)
    off = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 10.0, e["seed_image"],
                                  e["neighbor_image"], e["seed_text"], e["neighbor_text"], cross_modal=False)
    assert "neighbor_cross_modal_loss" not in off and "neighbor_image_loss" in off
    assert "neighbor_image_image_loss" not in off   # off unless asked for
    # neighbor_image given for the cross-modal term only: the fused-vs-neighbor-image term is skipped,
    # the others do not change.
    both = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 10.0, e["seed_image"],
                                   e["neighbor_image"], e["seed_text"], e["neighbor_text"])
    cross_only = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 10.0, e["seed_image"],
                                         e["neighbor_image"], e["seed_text"], e["neighbor_text"], fused_image=False)
    assert set(both) - set(cross_only) == {"neighbor_image_loss"}
    for key in cross_only:
        torch.testing.assert_close(cross_only[key], both[key])
    with pytest.raises(ValueError, match="neighbor_fused"):
        neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"][:, :2], w, mask, 10.0)
    with pytest.raises(ValueError, match="false_negative_mask"):
        neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask[:, :5], 10.0)


def test_neighbor_alignment_ignores_padding_and_false_negatives():
    e, w, _ = _neighbor_inputs(3, 2, 4, 5, pad=False, fn=False)
    w[1, 1] = 0  # padded slot: its embedding must not matter
    base = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, None, 10.0)["neighbor_fused_loss"]
    changed = e["neighbor_fused"].clone()
    changed[1, 1] = e["seed_fused"][0]
    again = neighbor_alignment_loss(e["seed_fused"], changed, w, None, 10.0)["neighbor_fused_loss"]
    torch.testing.assert_close(base, again)
    # a masked false negative stops acting as a negative for that seed only
    mask = torch.zeros(3, 6, dtype=torch.bool)
    mask[0, 4] = True
    hard = e["neighbor_fused"].clone()
    hard[2, 0] = e["seed_fused"][0]  # column 4 looks exactly like seed 0
    unmasked = neighbor_alignment_loss(e["seed_fused"], hard, w, None, 10.0)["neighbor_fused_loss"]
    masked = neighbor_alignment_loss(e["seed_fused"], hard, w, mask, 10.0)["neighbor_fused_loss"]
    assert masked < unmasked


def test_neighbor_alignment_weights_and_gradients():
    e, w, mask = _neighbor_inputs(3, 3, 4, 7)
    seed = e["seed_fused"].double().requires_grad_()
    nb = e["neighbor_fused"].double().requires_grad_()
    scale = torch.tensor(7.0, dtype=torch.double, requires_grad=True)
    for exclude_own in (True, False):
        assert torch.autograd.gradcheck(
            lambda q, v, s: neighbor_alignment_loss(q, v, w, mask, s, exclude_own_neighbors=exclude_own)[
                "neighbor_fused_loss"], (seed, nb, scale))
    # scaling a seed's visit counts does not change the loss (weights are normalized per seed)
    w2 = w.clone()
    w2[0] *= 7
    torch.testing.assert_close(neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 5.0),
                               neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w2, mask, 5.0))


def test_neighbor_alignment_seed_without_neighbors_and_no_negatives_is_finite():
    e, w, _ = _neighbor_inputs(2, 2, 4, 9, pad=False, fn=False)
    w[1] = 0
    seed = e["seed_fused"].clone().requires_grad_()
    out = neighbor_alignment_loss(seed, e["neighbor_fused"], w, None, 10.0)["neighbor_fused_loss"]
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(seed.grad).all()
    # seed 0's only negatives are its own neighbors (excluded) and padding: loss is exactly 0
    assert out.item() == pytest.approx(0.0, abs=1e-6)


def test_neighbor_module_matches_function():
    e, w, mask = _neighbor_inputs(3, 2, 4, 11)
    mod = NeighborAlignmentLoss(cross_modal=True)(e["seed_fused"], e["neighbor_fused"], w, mask, 4.0,
                                                  e["seed_image"], e["neighbor_image"], e["seed_text"],
                                                  e["neighbor_text"])
    fn = neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 4.0, e["seed_image"],
                                 e["neighbor_image"], e["seed_text"], e["neighbor_text"])
    assert mod.keys() == fn.keys()
    for key in mod:
        torch.testing.assert_close(mod[key], fn[key])


# -- weighted total ------------------------------------------------------------------------------

def _outputs(n, d, g):
    return {"image_emb": unit(n, d, generator=g), "text_emb": unit(n, d, generator=g),
            "fused_emb": unit(n, d, generator=g), "logit_scale": torch.tensor(10.0),
            "logit_bias": torch.tensor(-5.0), "neighbor_logit_scale": torch.tensor(8.0)}


def test_pinclip_loss_weighted_total():
    g = torch.Generator().manual_seed(0)
    s, k, d = 4, 3, 8
    out, nb = _outputs(s, d, g), _outputs(s * k, d, g)
    w = torch.randint(0, 4, (s, k), generator=g).float()
    w[:, 0] = 1
    cfg = LossConfig(image_text="clip", image_text_weight=2.0, neighbor_fused_weight=1.0,
                     neighbor_image_weight=0.5, neighbor_cross_modal_weight=0.25)
    res = PinCLIPLoss(cfg, d)(out, nb, w, None)
    assert set(res) == {"clip_loss", "neighbor_fused_loss", "neighbor_image_loss",
                        "neighbor_cross_modal_loss", "loss"}
    torch.testing.assert_close(res["clip_loss"], 2.0 * clip_loss(out["image_emb"], out["text_emb"], 10.0))
    raw = neighbor_alignment_loss(out["fused_emb"], nb["fused_emb"], w, None, 8.0, out["image_emb"],
                                  nb["image_emb"], out["text_emb"], nb["text_emb"])
    torch.testing.assert_close(res["neighbor_image_loss"], 0.5 * raw["neighbor_image_loss"])
    torch.testing.assert_close(res["neighbor_cross_modal_loss"], 0.25 * raw["neighbor_cross_modal_loss"])
    torch.testing.assert_close(res["loss"], sum(v for key, v in res.items() if key != "loss"))
    # zero weights and the cross-modal switch drop terms; siglip replaces clip
    cfg = LossConfig(image_text="siglip", neighbor_image_weight=0.0, cross_modal=False)
    res = PinCLIPLoss(cfg, d)(out, nb, w, None)
    assert set(res) == {"siglip_loss", "neighbor_fused_loss", "loss"}
    torch.testing.assert_close(res["siglip_loss"], siglip_loss(out["image_emb"], out["text_emb"], 10.0, -5.0))
    # the image-image term: seed images against neighbor images, also without the cross-modal terms
    ii = PinCLIPLoss(LossConfig(neighbor_image_weight=0.0, cross_modal=False, neighbor_image_image_weight=0.7), d)
    res = ii(out, nb, w, None)
    assert set(res) == {"clip_loss", "neighbor_fused_loss", "neighbor_image_image_loss", "loss"}
    raw = neighbor_alignment_loss(out["image_emb"], nb["image_emb"], w, None, 8.0)
    torch.testing.assert_close(res["neighbor_image_image_loss"], 0.7 * raw["neighbor_fused_loss"])
    # without neighbors, only the image-text term
    assert set(PinCLIPLoss(LossConfig(), d)(out)) == {"clip_loss", "loss"}
    # extra negatives reach the neighbor terms
    neg = _outputs(5, d, g)
    neg_mask = torch.zeros(s, 5, dtype=torch.bool)
    with_neg = PinCLIPLoss(cfg, d)(out, nb, w, None, negative_outputs=neg, negative_mask=neg_mask)
    raw = neighbor_alignment_loss(out["fused_emb"], nb["fused_emb"], w, None, 8.0,
                                  negatives={"fused_emb": neg["fused_emb"]}, negative_mask=neg_mask)
    torch.testing.assert_close(with_neg["neighbor_fused_loss"], raw["neighbor_fused_loss"])
    assert with_neg["neighbor_fused_loss"] > res["neighbor_fused_loss"]


def test_pinclip_loss_matryoshka_averages_nested_prefixes():
    g = torch.Generator().manual_seed(1)
    out = _outputs(6, 8, g)
    cfg = LossConfig(image_text="clip", matryoshka_weights=[1.0, 3.0])
    res = PinCLIPLoss(cfg, 8, matryoshka_dims=[2, 8])(out)
    trunc = lambda x: F.normalize(x[:, :2], dim=-1)  # noqa: E731
    expected = (clip_loss(trunc(out["image_emb"]), trunc(out["text_emb"]), 10.0)
                + 3 * clip_loss(out["image_emb"], out["text_emb"], 10.0)) / 4
    torch.testing.assert_close(res["clip_loss"], expected)
    # a list without the full dim still trains the full embedding
    assert PinCLIPLoss(LossConfig(), 8, matryoshka_dims=[2, 4]).dims == [2, 4, 8]


def test_losses_run_in_float32_inside_autocast():
    e, w, mask = _neighbor_inputs(3, 2, 8, 13)
    g = torch.Generator().manual_seed(5)
    img, txt = unit(6, 8, generator=g), unit(6, 8, generator=g)
    plain = (clip_loss(img, txt, 50.0), siglip_loss(img, txt, 10.0, -3.0, chunk_size=2),
             neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 50.0)["neighbor_fused_loss"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = (clip_loss(img, txt, 50.0), siglip_loss(img, txt, 10.0, -3.0, chunk_size=2),
                  neighbor_alignment_loss(e["seed_fused"], e["neighbor_fused"], w, mask, 50.0)["neighbor_fused_loss"])
    for a, b in zip(plain, inside):
        torch.testing.assert_close(a, b)


def test_false_negative_mask_from_ids_matches_loops():
    from pinclip.losses import false_negative_mask_from_ids
    seeds = torch.tensor([10, 11, 12])
    nbrs = torch.tensor([[20, 21], [20, 10], [22, -1]])
    got = false_negative_mask_from_ids(seeds, nbrs)
    flat = nbrs.reshape(-1).tolist()
    for s in range(3):
        own = set(nbrs[s].tolist())
        for c, pin in enumerate(flat):
            assert bool(got[s, c]) == (pin >= 0 and (pin == int(seeds[s]) or pin in own)), (s, c)
