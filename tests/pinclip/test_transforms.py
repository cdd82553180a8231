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


# ---------------------------------------------------------------------------- safe opening
def _png_declaring(width: int, height: int) -> bytes:
    """A ~60-byte PNG whose IHDR declares width x height (8-bit RGB) but holds no pixel data:
    what a decompression bomb looks like to a header reader."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_open_image_refuses_what_would_hang_or_is_no_image(tmp_path):
    import os

    from pinclip.transforms import ImageReadError, open_image

    os.mkfifo(tmp_path / "pipe.png")     # opening it for reading would block forever
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "dir.png").mkdir()
    for name, reason, words in [("pipe.png", "not_regular", "FIFO"), ("dir.png", "not_regular", "directory"),
                                ("missing.png", "missing", "no such file"),
                                ("text.png", "unreadable", "not an image")]:
        with pytest.raises(ImageReadError, match=words) as exc:
            open_image(tmp_path / name)
        assert exc.value.reason == reason and str(tmp_path / name) in str(exc.value)
    with pytest.raises(ImageReadError, match="character device"):
        open_image("/dev/zero")            # endless "data": never read


def test_open_image_checks_pixels_from_the_header_before_decoding(tmp_path):
    import time

    from pinclip.transforms import ImageReadError, load_rgb, open_image, read_image_size

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_declaring(20000, 20000))   # 400M pixels: 1.2 GB if decoded
    t0 = time.perf_counter()
    with pytest.raises(ImageReadError, match="declares 400,000,000 pixels") as exc:
        open_image(bomb)
    assert exc.value.reason == "too_large" and time.perf_counter() - t0 < 1.0
    with pytest.raises(ImageReadError, match="too_large|pixels"):
        load_rgb(bomb)                     # the transforms' path input goes through the same check
    # Between Pillow's warning and error limits: its DecompressionBombWarning is a refusal too,
    # even when our own cap would allow the image.
    (tmp_path / "warn.png").write_bytes(_png_declaring(10000, 10000))
    with pytest.raises(ImageReadError, match="decompression-bomb limit") as exc:
        open_image(tmp_path / "warn.png", max_pixels=10**9)
    assert exc.value.reason == "too_large"
    # Our cap, from the header of a real image.
    _image(50, 30).save(tmp_path / "ok.png")
    assert read_image_size(tmp_path / "ok.png") == (50, 30)
    with pytest.raises(ImageReadError, match=r"50 x 30 = 1,500 pixels, over the cap of 1,000"):
        open_image(tmp_path / "ok.png", max_pixels=1000)
    img = open_image(tmp_path / "ok.png", max_pixels=1500)
    assert img.size == (50, 30) and np.asarray(img).shape == (30, 50, 3)
    # A header that promises pixels the file does not hold: unreadable, not a crash.
    (tmp_path / "short.png").write_bytes(_png_declaring(20, 20))
    with pytest.raises(ImageReadError, match="cannot decode") as exc:
        open_image(tmp_path / "short.png")
    assert exc.value.reason == "unreadable"
