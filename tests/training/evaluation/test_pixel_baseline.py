"""The frozen-text-plus-pixels baseline: PCA-whitened pixels and the late fusion whose text weight
is chosen on validation edges."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import board_embeddings, synthetic_store
from training.evaluation.pixel_baseline import late_fusion, pixel_embeddings


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(graph store path, graph, truth) of a 600-pin world without images."""
    return synthetic_store(tmp_path_factory, "pixels", 600, 60)


def test_pixels_are_deterministic_unit_rows_and_equal_images_coincide(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(12):
        arr = rng.integers(0, 255, size=(20, 20, 3), dtype=np.uint8)
        p = tmp_path / f"{i}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    paths[5] = paths[3]          # the same image twice
    paths[7] = None              # no image
    emb, has = pixel_embeddings(paths, side=8, components=6, progress=False)
    again, _ = pixel_embeddings(paths, side=8, components=6, progress=False)
    assert emb.shape == (12, 6) and emb.dtype == torch.float32
    assert torch.equal(emb, again)
    assert has.tolist() == [i != 7 for i in range(12)]
    assert torch.count_nonzero(emb[7]) == 0
    assert torch.allclose(emb[has].norm(dim=1), torch.ones(11), atol=1e-5)
    assert torch.allclose(emb[3], emb[5])
    # Whitening: with power 0 (no whitening) and every component kept, cosines are those of the
    # centered pixels themselves.
    raw, _ = pixel_embeddings(paths, side=8, components=8 * 8 * 3, power=0.0, progress=False)
    x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((8, 8)), dtype=np.float32).ravel() / 255
                  for p in paths if p is not None])
    x = torch.from_numpy(x - x.mean(axis=0))
    x = torch.nn.functional.normalize(x, dim=1)
    assert torch.allclose(raw[has] @ raw[has].T, x @ x.T, atol=1e-4)


def test_an_unreadable_image_is_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception, match="broken.png"):
        pixel_embeddings([bad], progress=False)


def test_late_fusion_weighs_the_informative_side_on_validation(store):
    _, g, _ = store
    informative = board_embeddings(g, 0.1, seed=0, dim=16)
    noise = torch.randn(g.num_pins, 16, generator=torch.Generator().manual_seed(1))
    text_knows = late_fusion(g, noise, informative)
    image_knows = late_fusion(g, informative, noise)
    assert text_knows.text_weight >= 0.7 and image_knows.text_weight <= 0.4
    for fused in (text_knows, image_knows):       # the best on validation; ties go to the first weight
        best = max(fused.validation.values())
        assert fused.validation[fused.text_weight] == best
        assert all(v < best for a, v in fused.validation.items() if a < fused.text_weight)
    assert set(text_knows.validation) == {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9}
    assert text_knows.validation[0.9] > text_knows.validation[0.3]
    # The fused cosine is the weighted sum of the two cosines.
    e, a = text_knows.embedding, text_knows.text_weight
    i = torch.nn.functional.normalize(noise, dim=1)
    t = torch.nn.functional.normalize(informative, dim=1)
    assert e.shape == (g.num_pins, 32)
    assert torch.allclose(e[:5] @ e[5:10].T, (1 - a) * i[:5] @ i[5:10].T + a * t[:5] @ t[5:10].T, atol=1e-5)
