"""Model directories (pinclip.pretrained): save -> load round trips, Matryoshka prefixes, integrity
checks, no pickle, and a loaded model that needs neither graph, sampling nor training."""
from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import pinclip
from pinclip import MODEL_FORMAT, ModelDirError, create_model, get_image_transform, get_tokenizer, is_model_dir
from pinclip.config import ConfigError

from .conftest import tiny_config

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["a red bicycle", "", "kitchen ideas with a very long caption that goes past the context length", None]


def _images(n: int = 4, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(n)]


def _reference(model, images, texts, fp16_text: bool = False) -> dict:
    """The original model's outputs, computed by hand (eval transform, tokenizer, forward)."""
    tf = get_image_transform(model, train=False)
    x = torch.stack([tf(im) if im is not None else torch.zeros(3, model.image_size, model.image_size)
                     for im in images])
    tok = get_tokenizer(model)(texts)
    if fp16_text:
        feats = model.text_features(tok["input_ids"], tok["attention_mask"], dtype=torch.float16)
        text = {"text_features": feats["tokens"], "text_mask": feats["mask"]}
    else:
        text = dict(tok)
    with torch.no_grad():
        return model.eval()(x, **text)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = create_model(tiny_config(matryoshka_dims=[8, 16])).eval()
    out = tmp_path / "model"
    out.mkdir()
    manifest = pinclip.save_pretrained(model, out, extra_manifest={"note": "test"})
    return model, out, manifest


def test_round_trip_identical(saved):
    model, out, manifest = saved
    assert manifest["format"] == MODEL_FORMAT and manifest["version"] == 1 and manifest["note"] == "test"
    assert manifest["embed_dim"] == 16 and manifest["image_size"] == 32
    assert {"config.json", "model.safetensors", "preprocess.json", "README.md"} <= set(manifest["files"])
    assert json.loads((out / "manifest.json").read_text()) == manifest
    assert is_model_dir(out) and not is_model_dir(out.parent)
    enc = pinclip.load(out)
    assert (enc.embed_dim, enc.image_size, enc.device) == (16, 32, torch.device("cpu"))
    assert not enc.model.training and enc.config.name == "tiny-test"
    images = _images()
    ref = _reference(model, images, TEXTS)
    image, text = enc.encode_image(images, batch_size=3), enc.encode_text(TEXTS, batch_size=3)
    fused = enc.encode_pins(images, TEXTS, batch_size=3)
    for got, key in ((image, "image_emb"), (text, "text_emb"), (fused, "fused_emb")):
        assert got.dtype == torch.float32 and got.shape == (4, 16)
        torch.testing.assert_close(got, ref[key], rtol=0, atol=1e-6)
    # the state dicts are identical, tensor by tensor
    own = model.state_dict()
    for k, v in enc.model.state_dict().items():
        assert torch.equal(v, own[k]), k


def test_paths_and_missing_inputs(saved, tmp_path):
    model, out, _ = saved
    enc = pinclip.load(out)
    images = _images(2)
    paths = []
    for i, im in enumerate(images):
        p = tmp_path / f"im{i}.png"
        im.convert("RGBA").save(p)    # RGBA on disk: converted to RGB
        paths.append(str(p) if i == 0 else p)
    torch.testing.assert_close(enc.encode_image(paths), enc.encode_image(images), rtol=0, atol=1e-6)
    # a missing image is the all-zero image, a missing text the empty caption (as pinclip embed)
    ref = _reference(model, [None, images[0]], ["x", None])
    got = enc.encode_pins([None, images[0]], ["x", None])
    torch.testing.assert_close(got, ref["fused_emb"], rtol=0, atol=1e-6)
    torch.testing.assert_close(enc.encode_pins(texts=["a", "b"]), enc.encode_pins([None, None], ["a", "b"]))
    with pytest.raises(ValueError, match="2 images but 1 texts"):
        enc.encode_pins(images, ["x"])


def test_matryoshka_prefix(saved):
    _, out, _ = saved
    enc = pinclip.load(out)
    full, short = enc.encode_text(TEXTS), enc.encode_text(TEXTS, dim=8)
    assert short.shape == (4, 8)
    torch.testing.assert_close(short, F.normalize(full[:, :8], dim=-1))
    torch.testing.assert_close(short.norm(dim=-1), torch.ones(4))
    assert enc.encode_pins(_images(2), ["a", "b"], dim=16).shape == (2, 16)
    for bad in (0, 17, -1):
        with pytest.raises(ValueError, match=f"dim={bad}"):
            enc.encode_image(_images(1), dim=bad)


def test_frozen_text_tower_rounds_like_the_text_cache(tmp_path):
    """A frozen text tower's features are rounded to float16, as the trainer's text cache stores them."""
    torch.manual_seed(0)
    model = create_model(tiny_config(text={"freeze": "frozen"})).eval()
    pinclip.save_pretrained(model, tmp_path)
    assert json.loads((tmp_path / "preprocess.json").read_text())["text_features_dtype"] == "float16"
    enc = pinclip.load(tmp_path)
    ref = _reference(model, _images(), TEXTS, fp16_text=True)
    torch.testing.assert_close(enc.encode_text(TEXTS), ref["text_emb"], rtol=0, atol=1e-6)
    torch.testing.assert_close(enc.encode_pins(_images(), TEXTS), ref["fused_emb"], rtol=0, atol=1e-6)


def test_wrappers_and_empty_directory(saved, tmp_path):
    model, out, _ = saved
    again = pinclip.PinCLIP.from_pretrained(out)
    assert isinstance(again, pinclip.PinCLIP) and not again.training
    with pytest.raises(ModelDirError, match="not empty"):
        model.save_pretrained(out)
    (tmp_path / "second").mkdir()
    assert again.save_pretrained(tmp_path / "second")["format"] == MODEL_FORMAT


def test_tampered_weights_refused(saved):
    _, out, manifest = saved
    path = out / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match="model.safetensors") as info:
        pinclip.load(out)
    assert manifest["files"]["model.safetensors"]["sha256"] in str(info.value)
    assert isinstance(info.value, ConfigError)


def test_directory_problems(saved):
    _, out, manifest = saved
    (out / "preprocess.json").unlink()
    with pytest.raises(ModelDirError, match="preprocess.json: missing"):
        pinclip.load(out)
    manifest["format"] = "something-else"
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert not is_model_dir(out)
    with pytest.raises(ModelDirError, match="something-else"):
        pinclip.load(out)
    (out / "manifest.json").unlink()
    with pytest.raises(ModelDirError, match="no manifest.json"):
        pinclip.load(out)


class _Boom:
    """Unpickling this creates a marker file: the proof that a pickle was read."""
    marker = None

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_never_read(saved, monkeypatch, tmp_path):
    _, out, _ = saved
    boom = _Boom()
    boom.marker = str(tmp_path / "unpickled")
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):
        (out / name).write_bytes(pickle.dumps(boom))

    def refuse(*args, **kwargs):
        raise AssertionError("pickle read")
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    enc = pinclip.load(out)
    enc.encode_pins(_images(1), ["a"])
    assert not (tmp_path / "unpickled").exists()


def test_fresh_interpreter_needs_no_toolkit(saved):
    _, out, _ = saved
    script = (
        "import json, sys\n"
        "import pinclip\n"
        f"enc = pinclip.load({str(out)!r})\n"
        "from PIL import Image\n"
        "im = Image.new('RGB', (40, 30), (200, 10, 10))\n"
        "e = enc.encode_pins([im, None], ['a', None]); t = enc.encode_text(['b']); i = enc.encode_image([im])\n"
        "assert e.shape == (2, 16) and t.shape == (1, 16) and i.shape == (1, 16)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('graph', 'sampling', 'training'))))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1]) == []


@pytest.mark.parametrize("vision", ["clip_vision", "qwen2_vl"])
def test_hf_towers_round_trip_without_their_checkpoints(hf_checkpoints, tmp_path, vision):
    """HF towers are rebuilt from the saved configs: the original checkpoints are gone at load time."""
    src = tmp_path / "src"
    shutil.copytree(hf_checkpoints[vision], src / "vision")
    shutil.copytree(hf_checkpoints["bert"], src / "bert")
    from pinclip.tokenizer import HFTokenizer
    HFTokenizer("builtin:all-MiniLM-L6-v2").tokenizer.save_pretrained(str(src / "tok"))
    vcfg = {"type": {"clip_vision": "hf_clip", "qwen2_vl": "hf_qwen2vl"}[vision], "pretrained": str(src / "vision"), "freeze": "frozen"}
    if vision.startswith("qwen"):
        vcfg["image_size"] = 32
    cfg = tiny_config(vision=vcfg, text={"type": "hf", "pretrained": str(src / "bert"), "tokenizer": str(src / "tok"),
                                         "context_length": 12, "freeze": "train_all"},
                      fusion={"patch_layers": [-1]})
    cfg["vision"] = vcfg
    torch.manual_seed(0)
    model = create_model(cfg).eval()
    out = tmp_path / "model"
    out.mkdir()
    manifest = pinclip.save_pretrained(model, out)
    assert any(name.startswith("tokenizer/") for name in manifest["files"])
    images, texts = _images(3), TEXTS[:3]
    ref = _reference(model, images, texts)
    shutil.rmtree(src)
    enc = pinclip.load(out)
    torch.testing.assert_close(enc.encode_image(images), ref["image_emb"], rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.encode_text(texts), ref["text_emb"], rtol=0, atol=1e-5)
    torch.testing.assert_close(enc.encode_pins(images, texts), ref["fused_emb"], rtol=0, atol=1e-5)
