"""pinclip.testing.tiny_checkpoints: every family writes offline and loads back with the classes
the toolkit (and a user) loads it with; the CLI; no overwriting; the same seed, the same bytes."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pinclip.testing import tiny_checkpoints as tc

REPO = Path(__file__).resolve().parents[2]


def _image(h=40, w=50):
    return Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def qwen3_vl(tmp_path_factory):
    if tc.unsupported_reason("qwen3_vl"):
        pytest.skip(tc.unsupported_reason("qwen3_vl"))
    return str(tc.write_tiny_checkpoints(tmp_path_factory.mktemp("tiny"), ["qwen3_vl"])["qwen3_vl"])


def test_families_and_default_selection():
    import transformers
    assert set(tc.FAMILIES) >= {"clip", "siglip", "qwen2_vl_vision", "qwen2_vl", "qwen3_vl"}
    has_qwen3 = hasattr(transformers, "Qwen3VLForConditionalGeneration")
    assert ("qwen3_vl" in tc.available_families()) == has_qwen3
    assert (tc.unsupported_reason("qwen3_vl") is None) == has_qwen3


def test_clip_is_a_full_clip_with_processor(hf_checkpoints):
    from transformers import AutoProcessor, AutoTokenizer, CLIPModel, CLIPProcessor
    path = hf_checkpoints["clip"]
    proc = AutoProcessor.from_pretrained(path)
    assert isinstance(proc, CLIPProcessor)
    assert AutoTokenizer.from_pretrained(path).decode(proc.tokenizer("A  red chair")["input_ids"],
                                                      skip_special_tokens=True) == "a red chair"
    model = CLIPModel.from_pretrained(path).eval()
    enc = proc(text=["a red chair", "a garden path in spring"], images=[_image(), _image(30, 20)],
               return_tensors="pt", padding=True)
    assert enc["pixel_values"].shape == (2, 3, 32, 32)
    with torch.no_grad():
        out = model(**enc)
    assert out.logits_per_image.shape == (2, 2) and torch.isfinite(out.logits_per_image).all()


@pytest.mark.parametrize("family, cls", [("clip_vision", "CLIPVisionModel"), ("siglip", "SiglipVisionModel")])
def test_vision_towers_load_with_their_image_processor(hf_checkpoints, family, cls):
    import transformers
    from transformers import AutoImageProcessor
    model = getattr(transformers, cls).from_pretrained(hf_checkpoints[family]).eval()
    pixels = AutoImageProcessor.from_pretrained(hf_checkpoints[family])(_image(), return_tensors="pt")
    assert pixels["pixel_values"].shape == (1, 3, 32, 32)
    with torch.no_grad():
        assert model(**pixels).pooler_output.shape == (1, 32)


def test_qwen2_vl_vision_is_the_vision_only_layout(hf_checkpoints):
    from transformers import AutoConfig
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel
    path = hf_checkpoints["qwen2_vl_vision"]
    assert AutoConfig.from_pretrained(path).model_type == "qwen2_vl_vision"
    model = Qwen2VisionTransformerPretrainedModel.from_pretrained(path)
    assert (model.config.embed_dim, model.config.hidden_size, model.config.depth) == (32, 48, 2)


def _check_vlm(path, model_cls_name):
    """The full VLM loads with its tokenizer and image processor, and runs one image + text."""
    import transformers
    from transformers import AutoImageProcessor, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    assert (image_processor.patch_size, image_processor.merge_size) == (8, 2)
    model = getattr(transformers, model_cls_name).from_pretrained(path).eval()
    assert model.config.text_config.vocab_size == len(tok)
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    prompt = tok.apply_chat_template([{"role": "user", "content": [{"type": "image"},
                                                                   {"type": "text", "text": "What is it?"}]}],
                                     tokenize=False, add_generation_prompt=True)
    assert prompt.count("<|image_pad|>") == 1 and prompt.endswith("<|im_start|>assistant\n")
    inputs = tc.qwen_vl_inputs(path, [_image()], prompt)
    n_tokens = int(inputs["image_grid_thw"].prod()) // 4
    assert inputs["image_grid_thw"].tolist() == [[1, 4, 6]]          # 40 x 50 px -> 32 x 48 px
    assert int(inputs["mm_token_type_ids"].sum()) == n_tokens == 6
    with torch.no_grad():
        out = model(**inputs)
    assert out.logits.shape == (1, inputs["input_ids"].shape[1], len(tok)) and torch.isfinite(out.logits).all()
    if importlib.util.find_spec("torchvision") is not None:   # the processor class needs torchvision
        from transformers import AutoProcessor
        enc = AutoProcessor.from_pretrained(path)(images=[_image()], text=[prompt], return_tensors="pt")
        torch.testing.assert_close(enc["input_ids"], inputs["input_ids"])


def test_qwen2_vl_is_a_full_vlm_with_tokenizer_and_processor(hf_checkpoints):
    _check_vlm(hf_checkpoints["qwen2_vl"], "Qwen2VLForConditionalGeneration")
    files = set(os.listdir(hf_checkpoints["qwen2_vl"]))
    assert {"processor_config.json", "preprocessor_config.json", "video_preprocessor_config.json",
            "chat_template.jinja", "tokenizer.json"} <= files


def test_qwen3_vl_is_a_full_vlm_with_tokenizer_and_processor(qwen3_vl):
    _check_vlm(qwen3_vl, "Qwen3VLForConditionalGeneration")


def test_bert_loads_with_auto_classes(hf_checkpoints):
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(hf_checkpoints["bert"])
    model = AutoModel.from_pretrained(hf_checkpoints["bert"])
    assert len(tok) == model.config.vocab_size == 30522 and model.config.num_hidden_layers == 3
    enc = tok(["a red chair"], return_tensors="pt")
    with torch.no_grad():
        assert model(**enc).last_hidden_state.shape == (1, enc["input_ids"].shape[1], 32)


def test_same_seed_same_bytes_other_seed_other_weights(hf_checkpoints, tmp_path):
    again = tc.write_tiny_checkpoints(tmp_path / "a", ["clip_vision", "qwen2_vl_vision"], seed=0)
    for family, path in again.items():
        ref = Path(hf_checkpoints[family])
        assert sorted(os.listdir(path)) == sorted(os.listdir(ref))
        for name in os.listdir(path):
            assert (path / name).read_bytes() == (ref / name).read_bytes(), (family, name)
    other = tc.write_tiny_checkpoints(tmp_path / "b", ["clip_vision"], seed=1)["clip_vision"]
    assert (other / "model.safetensors").read_bytes() != (again["clip_vision"] / "model.safetensors").read_bytes()


def test_writing_leaves_the_global_rng_alone(tmp_path):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tc.write_tiny_checkpoints(tmp_path, "clip_vision")
    torch.testing.assert_close(torch.rand(3), expected)


def test_refuses_to_overwrite_and_checks_before_writing(tmp_path):
    (tmp_path / "siglip").mkdir()
    (tmp_path / "siglip" / "mine.txt").write_text("keep me")
    (tmp_path / "clip_vision").mkdir()                         # an empty folder is filled
    for force in (False, True):                                # a folder of the user's is never replaced
        with pytest.raises(tc.TinyCheckpointError, match="siglip exists and holds files not written by this "
                                                         "module .*refusing to overwrite"):
            tc.write_tiny_checkpoints(tmp_path, ["clip_vision", "siglip"], force=force)
    assert not any((tmp_path / "clip_vision").iterdir())       # checked before anything was written
    assert (tmp_path / "siglip" / "mine.txt").read_text() == "keep me"
    (tmp_path / "siglip" / "mine.txt").unlink()
    first = tc.write_tiny_checkpoints(tmp_path, ["clip_vision", "siglip"])
    assert json.loads((first["siglip"] / tc.MARKER).read_text())["family"] == "siglip"
    with pytest.raises(tc.TinyCheckpointError, match="siglip exists and is not empty; refusing .*--force"):
        tc.write_tiny_checkpoints(tmp_path, ["siglip"], seed=1)
    weights = (first["siglip"] / "model.safetensors").read_bytes()
    again = tc.write_tiny_checkpoints(tmp_path, ["siglip"], seed=1, force=True)["siglip"]   # ours: replaced
    assert (again / "model.safetensors").read_bytes() != weights
    assert json.loads((again / tc.MARKER).read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_vision", "siglip"]   # no temp folders left
    with pytest.raises(tc.TinyCheckpointError, match=r"unknown family \['nope'\]; known: clip"):
        tc.write_tiny_checkpoints(tmp_path, ["nope"])
    (tmp_path / "file").write_text("x")
    with pytest.raises(tc.TinyCheckpointError, match="not a directory"):
        tc.write_tiny_checkpoints(tmp_path / "file", ["siglip"])


def test_cli_main_writes_and_refuses(tmp_path, capsys):
    from transformers.utils import logging as hf_logging
    bars = hf_logging.is_progress_bar_enabled()
    assert tc.main([str(tmp_path), "--families", "siglip,clip_vision", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "siglip" in out and "clip_vision" in out and "KB" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip_vision", "siglip"]
    assert tc.main([str(tmp_path), "--families", "siglip"]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert tc.main([str(tmp_path), "--families", "siglip", "--force"]) == 0
    assert tc.main([str(tmp_path), "--families", "bogus"]) == 2
    assert "unknown family" in capsys.readouterr().err
    assert hf_logging.is_progress_bar_enabled() == bars       # main() leaves the global setting as it was


def test_python_dash_m_entry_point(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "pinclip.testing.tiny_checkpoints", str(tmp_path / "out"),
                          "--families", "qwen2_vl_vision"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "RuntimeWarning" not in res.stderr and "Writing model shards" not in res.stderr
    assert (tmp_path / "out" / "qwen2_vl_vision" / "model.safetensors").is_file()
