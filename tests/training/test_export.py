"""`pinclip export`: a trained run's model as a model directory whose `pinclip.load` encoder gives
the embeddings `pinclip embed` writes for the same pins; the output policy of --out."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import pinclip
from graph import PinBoardGraph
from training.cli import main
from training.embed import embed_run, load_embeddings

TOL = 1e-4


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_world, text_cache_dir):
    """A 2-step run of the tiny world, its `pinclip embed` export and its `pinclip export`."""
    from training.config import load_train_config
    from training.export import export_run
    from training.trainer import Trainer

    from .conftest import tiny_train_config
    root = tmp_path_factory.mktemp("export")
    cfg = tiny_train_config(tiny_world, text_cache_dir, train={"max_steps": 2, "checkpoint_every": 2})
    Trainer(load_train_config(cfg), root / "run").train()
    (root / "run" / "evaluation.json").write_text(json.dumps(
        {"method": "run", "kind": "run", "step": 2, "metrics": {"board_recall@10": 0.25, "mrr": None}}))
    embed_run(root / "run", root / "emb", batch_size=32, device="cpu", num_workers=0, progress=False,
              log=lambda *_: None)
    export_run(root / "run", root / "model")
    return root


def test_export_matches_embed(exported):
    root = exported
    enc = pinclip.load(root / "model")
    emb = load_embeddings(root / "emb")
    g = PinBoardGraph.open(root / "run" / "graph")
    pins = np.arange(g.num_pins)
    texts = g.features.pin_text(pins)
    paths = g.features.pin_image_paths(pins)
    assert list(np.asarray(emb["image_missing"])) == [p is None for p in paths]
    got = {"image": enc.encode_image(paths), "text": enc.encode_text(texts), "fused": enc.encode_pins(paths, texts)}
    for key, value in got.items():
        diff = (value - torch.from_numpy(np.array(emb[key]))).abs().max().item()
        assert diff < TOL, f"{key}: max abs diff {diff}"
    # Matryoshka prefix of the run's dims
    short = enc.encode_pins(paths[:8], texts[:8], dim=8)
    ref = torch.nn.functional.normalize(torch.from_numpy(np.array(emb["fused"][:8])[:, :8]), dim=-1)
    assert (short - ref).abs().max().item() < TOL


def test_manifest_and_card(exported):
    root = exported
    manifest = json.loads((root / "model" / "manifest.json").read_text())
    assert manifest["format"] == "pinclip-model" and manifest["step"] == 2
    assert manifest["run_dir"] == str((root / "run").absolute())
    assert manifest["checkpoint"].endswith(".pt")
    pre = json.loads((root / "model" / "preprocess.json").read_text())
    assert pre["text_features_dtype"] == "float16"   # the run's text cache precision
    card = (root / "model" / "README.md").read_text()
    g = PinBoardGraph.open(root / "run" / "graph")
    for text in (f"{g.num_pins:,} pins", f"{g.num_boards:,} boards", f"{g.num_edges:,} pin-board edges",
                 "| board_recall@10 | 0.2500 |", "| mrr | n/a |", "step 2", "pinclip.load(", "| batch size | 16"):
        assert text in card, text


def test_cli_output_policy(exported, capsys):
    root = exported
    run, out = root / "run", root / "cli_model"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and pinclip.is_model_dir(out)
    (out / "stray.txt").write_text("from before")
    assert main(["export", str(run), "--out", str(out)]) == 0     # its own previous export: replaced
    assert not (out / "stray.txt").exists() and pinclip.load(out).embed_dim == 16
    other = root / "someone_else"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert main(["export", str(run), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "refusing" in err and (other / "notes.txt").read_text() == "keep me"


def test_cli_refuses_other_outputs(exported, capsys):
    root = exported
    for target in (root / "emb", root / "run"):
        assert main(["export", str(root / "run"), "--out", str(target)]) == 2, target
        assert "refusing" in capsys.readouterr().err
    assert main(["export", str(root / "missing_run"), "--out", str(root / "x")]) == 2
    assert "not a training run directory" in capsys.readouterr().err
