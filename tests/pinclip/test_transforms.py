"""Image preprocessing without torchvision: resize, center crop, normalize, augmentations."""
import numpy as np
import pytest
import torch
from PIL import Image

from pinclip.transforms import (AugmentConfig, ImageTransform, center_crop, load_rgb, normalize,
                                resize_shorter, to_tensor)

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _image(w=50, h=30, mode="RGB"):
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).convert(mode)


def test_resize_shorter_and_center_crop():
    img = resize_shorter(_image(50, 30), 24)
    assert img.size == (40, 24)
    crop = center_crop(img, 24)
    assert crop.size == (24, 24)
    # the crop is centered: columns 8..31 of the resized image
    np.testing.assert_array_equal(np.asarray(crop), np.asarray(img)[:, 8:32])


def test_to_tensor_and_normalize():
    img = Image.new("RGB", (4, 3), (255, 0, 51))
    t = to_tensor(img)
    assert t.shape == (3, 3, 4) and t.dtype == torch.float32
    torch.testing.assert_close(t[:, 0, 0], torch.tensor([1.0, 0.0, 0.2]))
    n = normalize(t, MEAN, STD)
    torch.testing.assert_close(n[:, 0, 0], (torch.tensor([1.0, 0.0, 0.2]) - torch.tensor(MEAN)) / torch.tensor(STD))


def test_eval_transform_shape_and_values():
    tf = ImageTransform(16, MEAN, STD)
    out = tf(_image())
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32
    expected = normalize(to_tensor(center_crop(resize_shorter(_image(), 16), 16)), MEAN, STD)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(tf(_image()), out)  # deterministic


@pytest.mark.parametrize("mode", ["L", "RGBA", "P"])
def test_non_rgb_inputs(mode, tmp_path):
    img = _image(mode=mode)
    assert ImageTransform(8, MEAN, STD)(img).shape == (3, 8, 8)
    path = tmp_path / "x.png"
    img.save(path)
    assert load_rgb(path).mode == "RGB"
    assert ImageTransform(8, MEAN, STD)(str(path)).shape == (3, 8, 8)


def test_transparent_pixels_become_white():
    img = Image.new("RGBA", (2, 2), (0, 0, 0, 0))
    assert load_rgb(img).getpixel((0, 0)) == (255, 255, 255)


def test_train_augmentations_are_random_but_reproducible_with_a_generator():
    img = _image(64, 48)
    a = [ImageTransform(16, MEAN, STD, train=True, generator=torch.Generator().manual_seed(3))(img) for _ in range(2)]
    torch.testing.assert_close(a[0], a[1])
    tf = ImageTransform(16, MEAN, STD, train=True, generator=torch.Generator().manual_seed(3))
    outs = [tf(img) for _ in range(4)]
    assert all(o.shape == (3, 16, 16) for o in outs)
    assert not all(torch.allclose(outs[0], o) for o in outs[1:])
    # no-op augmentation = resize of the full image (scale 1, ratio of the image, no flip, no jitter)
    plain = AugmentConfig(scale=(1.0, 1.0), ratio=(64 / 48, 64 / 48), hflip=0.0, brightness=0, contrast=0, saturation=0)
    out = ImageTransform(16, MEAN, STD, train=True, augment_config=plain)(img)
    expected = normalize(to_tensor(img.resize((16, 16), Image.Resampling.BICUBIC)), MEAN, STD)
    torch.testing.assert_close(out, expected)
