"""`pinclip baseline frozen-text|frozen-vlm|graph-only`: a baseline directory that `pinclip evaluate` scores."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_graph(tiny_world, tmp_path_factory):
    from graph.dataset import build_graph_from_dataset
    out = tmp_path_factory.mktemp("baseline") / "graph"
    build_graph_from_dataset(tiny_world, out, progress=False)
    return out


def test_graph_only_baseline_is_evaluable_and_rewritable(tiny_graph, tmp_path, capsys):
    from training.cli import main
    out = tmp_path / "graph_only"
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--steps", "2",
                 "--seed", "3", "--quiet"]) == 0
    assert "pinclip evaluate" in capsys.readouterr().out
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "graph_only" and meta["info"]["steps"] == 2 and meta["info"]["seed"] == 3
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["kind"] == "baseline" and ev["metrics"]["board_recall@10"] is not None
    assert ev["metrics"]["cold_start_board_recall@10"] is None   # no train edge: unsupported
    # Its own earlier output is replaced; an option it does not take is refused.
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--steps", "1",
                 "--quiet"]) == 0
    assert json.loads((out / "method.json").read_text())["info"]["steps"] == 1
    assert main(["baseline", "graph-only", "--graph", str(tiny_graph), "--out", str(out), "--model", "x"]) == 2
    assert "takes no --model" in capsys.readouterr().err


def test_frozen_text_baseline_and_refusals(tiny_graph, tmp_path, capsys, monkeypatch):
    from training.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "frozen_text"
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(out), "--quiet"]) == 0
    assert "pinclip evaluate" in capsys.readouterr().out
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "frozen_text" and meta["embeddings"] == ["text"]
    assert meta["info"]["model"] == "all-MiniLM-L6-v2"
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["board_recall@10"] is not None and "t2i_recall@10" not in ev["metrics"]

    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(out), "--steps", "3"]) == 2
    assert "takes no --steps" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(mine)]) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert (mine / "notes.txt").read_text() == "keep" and len(list(mine.iterdir())) == 1
    assert main(["baseline", "graph-only", "--graph", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "no such directory" in capsys.readouterr().err


def test_frozen_text_pixels_baseline_puts_pixels_beside_the_text(tiny_graph, tmp_path, capsys, monkeypatch):
    import numpy as np
    import torch

    from training.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    text_dir, out = tmp_path / "frozen_text", tmp_path / "frozen_text_pixels"
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(text_dir), "--quiet"]) == 0
    assert main(["baseline", "frozen-text-pixels", "--graph", str(tiny_graph), "--out", str(out), "--quiet"]) == 0
    capsys.readouterr()
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "frozen_text_pixels" and meta["embeddings"] == ["fused"]
    info = meta["info"]
    assert info["text_weight"] in {0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9} and info["pins_without_image"] == 0
    assert info["validation_board_recall@10"][str(info["text_weight"])] == max(
        v for v in info["validation_board_recall@10"].values() if v is not None)
    fused = torch.from_numpy(np.load(out / "embedding_fused.npy"))
    text = torch.from_numpy(np.load(text_dir / "embedding_text.npy"))
    k = info["pixels"]["components"]
    assert fused.shape == (text.shape[0], k + text.shape[1]) and 0 < k <= 128
    # The text half is the frozen text encoder's embedding, scaled by sqrt(text weight).
    assert torch.allclose(fused[:, k:], text * info["text_weight"] ** 0.5, atol=1e-5)
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["board_recall@10"] is not None and "t2i_recall@10" not in ev["metrics"]


@pytest.fixture
def tiny_qwen2_vl(hf_checkpoints):
    from pathlib import Path
    return Path(hf_checkpoints["qwen2_vl"])


def test_frozen_vlm_baseline_embeds_image_and_text_jointly(tiny_graph, tiny_qwen2_vl, tmp_path, capsys):
    import numpy as np
    import torch

    from graph import PinBoardGraph
    from pinclip.transforms import ImageTransform, open_image
    from pinclip.vlm import JointVLMEncoder
    from training.cli import main
    out = tmp_path / "frozen_vlm"
    assert main(["baseline", "frozen-vlm", "--graph", str(tiny_graph), "--out", str(out), "--model",
                 str(tiny_qwen2_vl), "--device", "cpu", "--quiet"]) == 0
    assert "pinclip evaluate" in capsys.readouterr().out
    meta = json.loads((out / "method.json").read_text())
    assert meta["method"] == "frozen_vlm" and meta["embeddings"] == ["fused", "image", "text"]
    assert meta["info"]["model"] == str(tiny_qwen2_vl) and meta["info"]["width"] == 48
    # Row by row what the encoder gives for the pin's image and caption (and each alone).
    g = PinBoardGraph.open(tiny_graph)
    pins = [int(p) for p in np.flatnonzero([p is not None for p in g.features.pin_image_paths(np.arange(g.num_pins))])[:2]]
    enc = JointVLMEncoder(str(tiny_qwen2_vl)).eval()
    tf = ImageTransform(enc.image_size, enc.image_mean, enc.image_std)
    images = torch.stack([tf(open_image(p)) for p in g.features.pin_image_paths(pins)])
    texts = g.features.pin_text(pins)
    with torch.no_grad():
        for head, prompts in (("fused", enc.tokenizer(texts)), ("image", enc.tokenizer([None] * 2)),
                              ("text", enc.tokenizer(texts, has_image=[False] * 2))):
            want = torch.nn.functional.normalize(enc(images, prompts["vlm_input_ids"],
                                                     prompts["vlm_attention_mask"]), dim=-1)
            got = torch.from_numpy(np.load(out / f"embedding_{head}.npy")[pins])
            assert torch.allclose(got, want, atol=1e-5), head
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["metrics"]["board_recall@10"] is not None and ev["metrics"]["t2i_recall@10"] is not None
    # The checkpoint is required; a text encoder is not a VLM.
    assert main(["baseline", "frozen-vlm", "--graph", str(tiny_graph), "--out", str(tmp_path / "x")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["baseline", "frozen-text", "--graph", str(tiny_graph), "--out", str(tmp_path / "y"),
                 "--device", "cpu"]) == 2
    assert "takes no --device" in capsys.readouterr().err


def test_compare_includes_the_frozen_vlm_when_given_one(tiny_world, tiny_qwen2_vl, tmp_path, monkeypatch):
    from training.compare import run_compare
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "cmp"
    rep = run_compare(tiny_world, out, methods=("frozen_text",), vlm=tiny_qwen2_vl, device="cpu", log=lambda *_: None)
    assert list(rep["dirs"]) == ["frozen_text", "frozen_vlm"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"frozen_text", "frozen_vlm"} and metrics["frozen_vlm"]["board_recall@10"] is not None
    assert json.loads((out / "compare.json").read_text())["vlm"] == str(tiny_qwen2_vl)
    assert "frozen_vlm" in (out / "report.md").read_text()
    with pytest.raises(Exception, match="--vlm"):
        run_compare(tiny_world, tmp_path / "cmp2", methods=("frozen_vlm",), log=lambda *_: None)
