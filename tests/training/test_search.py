"""`pinclip search` and training.search.search: text, image and pin queries on a faiss index."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("faiss")

from training.cli import main as cli_main  # noqa: E402
from training.search import SearchError, search  # noqa: E402


def _tiny_train_config(*args, **kwargs) -> dict:
    spec = importlib.util.spec_from_file_location("_training_conftest", Path(__file__).with_name("conftest.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny_train_config(*args, **kwargs)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_world, text_cache_dir):
    """A 2-step run, its model directory (pinclip export), its embeddings and two flat indexes."""
    from training.config import load_train_config
    from training.trainer import Trainer
    export = pytest.importorskip("training.export", reason="training.export (pinclip export) is not there yet")
    root = tmp_path_factory.mktemp("search")
    cfg = _tiny_train_config(tiny_world, text_cache_dir, train={"max_steps": 2, "checkpoint_every": 2})
    Trainer(load_train_config(cfg), root / "run").train()
    export.export_run(root / "run", root / "model")
    assert cli_main(["embed", str(root / "run"), "--out", str(root / "emb"), "--device", "cpu", "--quiet"]) == 0
    for which in ("image", "fused"):
        assert cli_main(["ann-index", str(root / "emb"), "--out", str(root / f"idx_{which}"), "--kind", "flat",
                         "--which", which]) == 0
    return {"root": root, "model": root / "model", "dataset": tiny_world}


def _pins(dataset: Path):
    t = pq.read_table(dataset / "pins.parquet")
    return t.column("pin_id").to_pylist(), t.column("text").to_pylist(), t.column("image").to_pylist()


def test_image_query_finds_its_own_pin(world, capsys):
    ids, texts, images = _pins(world["dataset"])
    row = next(i for i in range(20, len(ids)) if images[i] is not None and texts[i] is not None)
    capsys.readouterr()
    rc = cli_main(["search", str(world["root"] / "idx_image"), "--model", str(world["model"]),
                   "--image", str(world["dataset"] / images[row]), "-k", "5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"query", "results"} and out["query"]["image"] == str(world["dataset"] / images[row])
    assert len(out["results"]) == 5
    first = out["results"][0]
    assert first["pin_id"] == ids[row] and first["score"] == pytest.approx(1.0, abs=1e-3)
    # Text and image of the result come from the run's graph store.
    assert first["text"] == texts[row]
    assert Path(first["image"]).resolve() == (world["dataset"] / images[row]).resolve()
    scores = [r["score"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)
    for r in out["results"]:
        assert {"pin_id", "score"} <= set(r) <= {"pin_id", "score", "text", "image"}


def test_pin_query_finds_itself_and_the_table(world, capsys):
    ids, texts, _ = _pins(world["dataset"])
    out = search(world["root"] / "idx_fused", pin=ids[17], k=3)
    assert out["query"]["pin"] == ids[17] and out["results"][0]["pin_id"] == ids[17]
    assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    capsys.readouterr()
    assert cli_main(["search", str(world["root"] / "idx_fused"), "--pin", str(ids[17]), "-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "rank" in table and str(ids[17]) in table.splitlines()[2]


def test_text_query_on_image_and_fused_indexes(world):
    from pinclip import load
    enc = load(world["model"])
    _, texts, _ = _pins(world["dataset"])
    caption = next(t for t in texts if t)
    for which in ("image", "fused"):
        out = search(world["root"] / f"idx_{which}", enc, text=caption, k=4)
        assert out["query"]["text"] == caption and out["query"]["which"] == which
        assert len(out["results"]) == 4 and all(-1.0 - 1e-4 <= r["score"] <= 1.0 + 1e-4 for r in out["results"])


def test_search_of_a_dataset_export(world, tmp_path):
    """An index over `pinclip embed MODEL --dataset DIR` names the dataset's texts and images."""
    root = world["root"]
    assert cli_main(["embed", str(world["model"]), "--dataset", str(world["dataset"]), "--out", str(tmp_path / "emb"),
                     "--device", "cpu", "--quiet"]) == 0
    assert cli_main(["ann-index", str(tmp_path / "emb"), "--out", str(tmp_path / "idx"), "--kind", "flat",
                     "--which", "image"]) == 0
    ids, texts, images = _pins(world["dataset"])
    row = next(i for i in range(5, len(ids)) if images[i] is not None and texts[i] is not None)
    out = search(tmp_path / "idx", world["model"], image=world["dataset"] / images[row], k=2)
    assert out["results"][0]["pin_id"] == ids[row] and out["results"][0]["text"] == texts[row]
    assert root.exists()


def test_refusals(world, capsys):
    idx = str(world["root"] / "idx_fused")
    assert cli_main(["search", idx, "--pin", "no-such-pin"]) == 2
    assert "no-such-pin" in capsys.readouterr().err
    assert cli_main(["search", idx, "--text", "shoes"]) == 2
    assert "--model" in capsys.readouterr().err
    assert cli_main(["search", idx, "--model", str(world["model"]), "--image", "/no/such.png"]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SearchError, match="exactly one"):
        search(idx, world["model"], text="a", pin=1)
    with pytest.raises(SearchError, match="k=0"):
        search(idx, pin=1, k=0)
