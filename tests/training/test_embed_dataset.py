"""`pinclip embed RUN_DIR|MODEL_DIR --dataset DIR`: any dataset's pins, no graph store built."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph.tables import DatasetError
from training.cli import main as cli_main
from training.data import DataError
from training.embed import embed_run, load_embeddings
from training.embed_dataset import embed_dataset

NEW_PINS = 40


def _tiny_train_config(*args, **kwargs) -> dict:
    spec = importlib.util.spec_from_file_location("_training_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny_train_config(*args, **kwargs)


def _quiet(*_args, **_kwargs) -> None:
    pass


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_world, text_cache_dir):
    """A 2-step run of the tiny world and its own export (`pinclip embed RUN`)."""
    from training.config import load_train_config
    from training.trainer import Trainer
    root = tmp_path_factory.mktemp("embed_dataset")
    cfg = _tiny_train_config(tiny_world, text_cache_dir, train={"max_steps": 2, "checkpoint_every": 2})
    Trainer(load_train_config(cfg), root / "run").train()
    embed_run(root / "run", root / "own", batch_size=64, device="cpu", num_workers=0, progress=False, log=_quiet)
    return root / "run", root / "own"


@pytest.fixture(scope="module")
def new_pins(tmp_path_factory):
    """A second synthetic world (pins that arrived after training) with string pin ids in an
    order unlike the rows' (n039 ... n000), one pin without an image and one without text."""
    from graph.synth import synthesize
    out = tmp_path_factory.mktemp("new") / "new"
    synthesize(out, num_pins=NEW_PINS, num_boards=4, seed=7, image_size=32, workers=1, progress=False)
    t = pq.read_table(out / "pins.parquet")
    image = t.column("image").to_pylist()
    text = t.column("text").to_pylist()
    image[3], text[5] = None, None
    t = t.set_column(t.schema.get_field_index("pin_id"), "pin_id",
                     pa.array([f"n{NEW_PINS - 1 - i:03d}" for i in range(NEW_PINS)]))
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(image, pa.string()))
    t = t.set_column(t.schema.get_field_index("text"), "text", pa.array(text, pa.string()))
    pq.write_table(t, out / "pins.parquet")
    return out


def _model_dir(trained, tmp_path_factory):
    export = pytest.importorskip("training.export", reason="training.export (pinclip export) is not there yet")
    out = tmp_path_factory.mktemp("model") / "model"
    export.export_run(trained[0], out)
    return out


@pytest.fixture(scope="module")
def model_dir(trained, tmp_path_factory):
    return _model_dir(trained, tmp_path_factory)


def _check_export(out: Path, dataset: Path) -> dict:
    emb = load_embeddings(out)
    t = pq.read_table(dataset / "pins.parquet")
    p = t.num_rows
    d = emb["manifest"]["dim"]
    for k in ("image", "text", "fused"):
        assert emb[k].shape == (p, d) and emb[k].dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(np.asarray(emb[k]), axis=1), 1.0, atol=1e-4)
    np.testing.assert_array_equal(emb["pin_ids"], np.arange(p))
    assert emb["pin_external_ids"] == t.column("pin_id").to_pylist()
    np.testing.assert_array_equal(emb["cold_start"], np.asarray(t.column("fresh").to_pylist(), dtype=bool))
    np.testing.assert_array_equal(emb["image_missing"], np.asarray(t.column("image").is_null()))
    m = emb["manifest"]
    assert m["source"] == "dataset" and m["dataset"] == str(dataset.absolute()) and m["num_pins"] == p
    return emb


def test_run_embeds_a_new_dataset(trained, new_pins, tmp_path, capsys):
    run, _ = trained
    rc = cli_main(["embed", str(run), "--dataset", str(new_pins), "--out", str(tmp_path / "emb"), "--device", "cpu",
                   "--batch-size", "16", "--workers", "1", "--quiet"])
    assert rc == 0
    assert "40 pins" in capsys.readouterr().out
    emb = _check_export(tmp_path / "emb", new_pins)
    assert emb["cold_start"].any() and not emb["cold_start"].all()
    assert emb["manifest"]["run_dir"] == str(run.absolute()) and emb["manifest"]["step"] == 2
    assert not (tmp_path / "emb" / "graph").exists() and not (new_pins / "graph").exists()


def test_run_dataset_equals_the_runs_own_export(trained, tiny_world, tmp_path):
    run, own = trained
    out = embed_dataset(run, tiny_world, tmp_path / "emb", batch_size=64, device="cpu", progress=False, log=_quiet)
    a, b = load_embeddings(out), load_embeddings(own)
    for k in ("image", "text", "fused"):
        np.testing.assert_allclose(np.asarray(a[k]), np.asarray(b[k]), atol=1e-4)
    assert a["pin_external_ids"] == b["pin_external_ids"]
    np.testing.assert_array_equal(a["image_missing"], b["image_missing"])


def test_bad_images(trained, new_pins, tmp_path):
    run, _ = trained
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("pins.parquet", "boards.parquet", "edges.parquet"):
        (broken / name).write_bytes((new_pins / name).read_bytes())
    (broken / "images").mkdir()
    t = pq.read_table(new_pins / "pins.parquet")
    for rel in t.column("image").to_pylist():
        if rel is not None and rel != t.column("image")[7].as_py():   # pin 7's image is missing
            (broken / rel).write_bytes((new_pins / rel).read_bytes())
    with pytest.raises(DataError, match=r"pin 7 .*bad image"):
        embed_dataset(run, broken, tmp_path / "emb", device="cpu", progress=False, log=_quiet)
    assert not (tmp_path / "emb").exists()
    embed_dataset(run, broken, tmp_path / "emb", device="cpu", progress=False, log=_quiet, skip_bad_images=True)
    missing = load_embeddings(tmp_path / "emb")["image_missing"]
    assert missing[7] and missing[3] and missing.sum() == 2
    # An image path that leaves the dataset directory is refused when the table is read.
    t = t.set_column(t.schema.get_field_index("image"), "image",
                     pa.array(["../outside.png"] + t.column("image").to_pylist()[1:], pa.string()))
    pq.write_table(t, broken / "pins.parquet")
    with pytest.raises(DatasetError, match="outside the dataset directory"):
        embed_dataset(run, broken, tmp_path / "emb2", device="cpu", progress=False, log=_quiet)


def test_model_dir_embeds_a_dataset(trained, model_dir, new_pins, tmp_path, capsys):
    run, own = trained
    rc = cli_main(["embed", str(model_dir), "--dataset", str(new_pins), "--out", str(tmp_path / "emb"),
                   "--device", "cpu", "--quiet"])
    assert rc == 0, capsys.readouterr().err
    emb = _check_export(tmp_path / "emb", new_pins)
    assert emb["manifest"]["model_dir"] == str(model_dir.absolute())
    # The same vectors as the run's model on the same pins (the model directory rounds its frozen
    # text tower's features to float16 as the run's text feature cache stores them).
    via_run = embed_dataset(run, new_pins, tmp_path / "via_run", device="cpu", progress=False, log=_quiet)
    ref = load_embeddings(via_run)
    for k in ("image", "text", "fused"):
        np.testing.assert_allclose(np.asarray(emb[k]), np.asarray(ref[k]), atol=1e-4)


def test_model_dir_needs_dataset(model_dir, tmp_path, capsys):
    rc = cli_main(["embed", str(model_dir), "--out", str(tmp_path / "emb"), "--quiet"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--dataset" in err and "model directory" in err
    assert not (tmp_path / "emb").exists()


def test_dataset_flag_refusals(trained, new_pins, tmp_path, capsys):
    run, _ = trained
    assert cli_main(["embed", str(run), "--dataset", str(new_pins), "--out", str(tmp_path / "e"),
                     "--allow-changed-graph"]) == 2
    assert "--allow-changed-graph" in capsys.readouterr().err
    assert cli_main(["embed", str(run), "--out", str(tmp_path / "e"), "--skip-bad-images"]) == 2
    assert "--skip-bad-images goes with --dataset" in capsys.readouterr().err
    assert cli_main(["embed", str(run), "--dataset", str(tmp_path / "nope"), "--out", str(tmp_path / "e"),
                     "--device", "cpu", "--quiet"]) == 2
    assert "no such dataset directory" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()
