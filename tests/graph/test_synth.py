"""The synthetic Pin-Board world (``graph.synth``, ``pinclip synth``)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from graph import synth, synth_render
from graph.dataset import load_dataset_graph
from graph.synth import STYLE_WORDS, STYLES, TOPICS, read_truth, synthesize

SIZE = 32


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """A 300-pin, 30-board world with 32 px images (rendered once for the module)."""
    out = tmp_path_factory.mktemp("synth") / "world"
    synthesize(out, num_pins=300, num_boards=30, seed=7, image_size=SIZE, workers=1, progress=False)
    return out


def _tables(d: Path) -> dict[str, pa.Table]:
    return {n: pq.read_table(d / f"{n}.parquet")
            for n in ("pins", "boards", "edges", "truth_pins", "truth_boards")}


def test_deterministic_across_runs_and_worker_counts(world, tmp_path, helpers):
    again = tmp_path / "again"
    s = synthesize(again, num_pins=300, num_boards=30, seed=7, image_size=SIZE, workers=2, progress=False)
    assert s.num_pins == 300 and s.num_boards == 30 and s.num_topics == len(TOPICS)
    assert s.num_styles == len(STYLES)
    a, b = helpers.tree_digest(world), helpers.tree_digest(again)
    assert len(a) == 300 + 6
    assert a == b


def test_different_seeds_differ(world, tmp_path, helpers):
    other = tmp_path / "other"
    synthesize(other, num_pins=300, num_boards=30, seed=8, images=False, progress=False)
    t7, t8 = _tables(world), _tables(other)
    assert not t7["edges"].equals(t8["edges"])
    assert t7["pins"].column("text") != t8["pins"].column("text")
    # and a single render depends on the seed
    a = synth_render.render_pin(7, 0, "star", TOPICS[3].palette, 0, SIZE)
    b = synth_render.render_pin(8, 0, "star", TOPICS[3].palette, 0, SIZE)
    assert not np.array_equal(a, b)


def test_schema(world):
    t = _tables(world)
    assert t["pins"].schema.names == ["pin_id", "text", "image", "fresh"]
    assert [f.type for f in t["pins"].schema] == [pa.int64(), pa.string(), pa.string(), pa.bool_()]
    assert t["boards"].schema.names == ["board_id", "name"]
    assert [f.type for f in t["boards"].schema] == [pa.int64(), pa.string()]
    assert t["edges"].schema.names == ["pin_id", "board_id", "weight", "timestamp"]
    assert [f.type for f in t["edges"].schema] == [pa.int64(), pa.int64(), pa.float32(), pa.int64()]
    assert t["truth_pins"].schema.names == ["pin_id", "topic", "style", "text_topic"]
    assert t["truth_boards"].schema.field("topics").type == pa.list_(pa.int32())
    assert t["pins"].column("pin_id").to_pylist() == list(range(300))
    assert t["boards"].column("board_id").to_pylist() == list(range(30))
    assert not any(c.null_count for c in t["edges"].columns)
    # one row per (pin, board), weights >= 1
    e = t["edges"]
    pairs = set(zip(e.column("pin_id").to_pylist(), e.column("board_id").to_pylist()))
    assert len(pairs) == e.num_rows
    assert min(e.column("weight").to_pylist()) >= 1.0
    # images exist where the table says, RGB at the requested size
    images = t["pins"].column("image").to_pylist()
    assert images[5] == "images/000005.png"
    for rel in images[:5]:
        with Image.open(world / rel) as im:
            assert im.mode == "RGB" and im.size == (SIZE, SIZE)
    meta = read_truth(world).params
    assert meta["params"]["num_pins"] == 300 and len(meta["styles"]) == len(STYLES)


def test_every_pin_has_an_edge_and_every_board_a_pin(world):
    e = _tables(world)["edges"]
    assert np.all(np.bincount(e.column("pin_id").to_numpy(), minlength=300) >= 1)
    assert np.all(np.bincount(e.column("board_id").to_numpy(), minlength=30) >= 1)


def test_pins_are_saved_only_to_boards_of_their_style_and_topic(world):
    truth = read_truth(world)
    e = _tables(world)["edges"]
    for p, b in zip(e.column("pin_id").to_numpy(), e.column("board_id").to_numpy()):
        assert truth.pin_style[p] == truth.board_style[b]
        assert truth.pin_topic[p] in truth.board_topics[b]
    assert all(1 <= len(t) <= 3 for t in truth.board_topics)
    assert len(np.unique(truth.pin_style)) >= 4 and len(np.unique(truth.pin_topic)) >= 6


def test_power_law_degrees_on_a_larger_world(tmp_path):
    synthesize(tmp_path / "w", num_pins=5000, num_boards=500, seed=0, images=False, progress=False)
    e = pq.read_table(tmp_path / "w" / "edges.parquet")
    deg = np.bincount(e.column("pin_id").to_numpy())
    size = np.bincount(e.column("board_id").to_numpy())
    assert 2.0 <= e.num_rows / 5000 <= 4.0
    assert np.mean(deg <= 2) > 0.6 and deg.max() >= 10       # most pins on 1-2 boards, a few on many
    assert size.max() > 5 * np.median(size)                  # heavy-tailed board sizes


def test_captions_and_board_names_never_name_a_style(world):
    t = _tables(world)
    texts = t["pins"].column("text").to_pylist()
    names = t["boards"].column("name").to_pylist()
    for s in texts + names:
        if s is not None:
            assert not set(re.findall(r"[a-z]+", s.lower())) & STYLE_WORDS, s
    # and no vocabulary can: topic words, fillers, board phrases
    vocab = " ".join([w for tp in TOPICS for w in tp.words + tp.board_phrases]
                     + list(synth.ADJECTIVES) + list(synth.FILLERS) + list(synth.BOARD_SUFFIXES))
    assert not set(re.findall(r"[a-z]+", vocab)) & STYLE_WORDS


def test_caption_noise(tmp_path):
    synthesize(tmp_path / "w", num_pins=4000, num_boards=200, seed=1, images=False, progress=False)
    truth = read_truth(tmp_path / "w")
    texts = pq.read_table(tmp_path / "w" / "pins.parquet").column("text").to_pylist()
    null = np.array([x is None for x in texts])
    assert np.array_equal(null, truth.pin_text_topic < 0)
    assert 0.07 < null.mean() < 0.13
    misleading = (~null) & (truth.pin_text_topic != truth.pin_topic)
    assert 0.03 < misleading.mean() < 0.07
    for text, tt in zip(texts, truth.pin_text_topic):  # a caption uses its text topic's words
        if text is not None:
            assert any(w in text for w in TOPICS[tt].words), text
    assert len({t for t in texts if t}) > 200  # synonyms and filler vary the captions


def test_fresh_pins(world, tmp_path):
    t = _tables(world)
    fresh = np.asarray(t["pins"].column("fresh").to_pylist())
    assert fresh.sum() == 30  # round(0.1 * 300)
    e = t["edges"]
    ts, ep = e.column("timestamp").to_numpy(), e.column("pin_id").to_numpy()
    assert ts[fresh[ep]].min() > ts[~fresh[ep]].max()  # fresh pins' saves are the latest
    synthesize(tmp_path / "none", num_pins=50, num_boards=5, seed=0, images=False,
               fresh_fraction=0.0, progress=False)
    assert not any(pq.read_table(tmp_path / "none" / "pins.parquet").column("fresh").to_pylist())


def test_no_images(tmp_path):
    s = synthesize(tmp_path / "w", num_pins=40, num_boards=4, seed=0, images=False, progress=False)
    assert s.num_edges >= 40
    assert not (tmp_path / "w" / "images").exists()
    assert pq.read_table(tmp_path / "w" / "pins.parquet").column("image").null_count == 40


@pytest.mark.parametrize("kwargs, argument", [
    (dict(num_pins=0), "num_pins"), (dict(num_boards=0), "num_boards"),
    (dict(num_pins=5, num_boards=6), "num_boards"), (dict(fresh_fraction=1.0), "fresh_fraction"),
    (dict(fresh_fraction=-0.1), "fresh_fraction"), (dict(image_size=8), "image_size"),
    (dict(seed=-1), "seed"), (dict(workers=0), "workers"), (dict(num_pins=2.5), "num_pins"),
])
def test_argument_errors(tmp_path, kwargs, argument):
    args = dict(num_pins=10, num_boards=2, seed=0, progress=False) | kwargs
    with pytest.raises(ValueError, match=argument):
        synthesize(tmp_path / "w", **args)
    assert not (tmp_path / "w").exists()


def test_cli_end_to_end(tmp_path, capsys):
    from training.cli import main

    out = tmp_path / "w"
    rc = main(["synth", "--out", str(out), "--pins", "120", "--boards", "12", "--seed", "3",
               "--image-size", "16", "--workers", "1", "--fresh-fraction", "0.2", "--quiet"])
    assert rc == 0
    assert "pins 120" in capsys.readouterr().out
    pins = pq.read_table(out / "pins.parquet")
    assert sum(pins.column("fresh").to_pylist()) == 24
    with Image.open(out / pins.column("image")[0].as_py()) as im:
        assert im.size == (16, 16)
    assert main(["synth", "--out", str(tmp_path / "x"), "--pins", "3", "--boards", "4",
                 "--seed", "0", "--no-images"]) == 2
    assert "num_boards" in capsys.readouterr().err


def test_build_graph_accepts_the_world(world):
    g = load_dataset_graph(world)
    assert (g.num_pins, g.num_boards) == (300, 30)
    assert g.num_edges == _tables(world)["edges"].num_rows
    assert g.splits.params["cold_start_source"] == "fresh_flag"
    assert g.manifest["source"]["truth_files"] == ["truth_boards.parquet", "truth_pins.parquet"]


def _style_features(paths: list[Path]) -> np.ndarray:
    """Background statistics: mean colour of the border and mean |dx|, |dy| of the image."""
    feats = []
    for p in paths:
        a = np.asarray(Image.open(p), np.float32)
        border = np.concatenate([a[:3].reshape(-1, 3), a[-3:].reshape(-1, 3),
                                 a[:, :3].reshape(-1, 3), a[:, -3:].reshape(-1, 3)])
        g = a.mean(axis=2)
        dx, dy = np.abs(np.diff(g, axis=1)).mean(), np.abs(np.diff(g, axis=0)).mean()
        feats.append(np.concatenate([border.mean(0), [dx, dy]]))
    return np.asarray(feats)


def test_style_is_visible_in_images(world):
    """A nearest-centroid classifier on background statistics tells the styles apart."""
    truth = read_truth(world)
    x = _style_features([world / synth.image_path(i, 300) for i in range(300)])
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = truth.pin_style
    train, test = np.arange(300) % 2 == 0, np.arange(300) % 2 == 1
    styles = [s for s in np.unique(y[train])]
    centroids = np.stack([x[train & (y == s)].mean(0) for s in styles])
    pred = np.asarray(styles)[np.argmin(((x[test, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    accuracy = (pred == y[test]).mean()
    assert accuracy > 0.8, accuracy  # chance is 1/8 (measured: 0.97)


def test_failure_leaves_existing_directory_untouched(tmp_path, monkeypatch, helpers):
    out = tmp_path / "w"
    out.mkdir()
    (out / "keep.txt").write_text("previous dataset")
    (out / "synth.json").write_text('{"generator": "graph.synth"}')  # a previous world: synth may replace it
    before = helpers.tree_digest(out)

    def boom(*args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(synth_render, "render_chunk", boom)
    with pytest.raises(RuntimeError, match="renderer failed"):
        synthesize(out, num_pins=40, num_boards=4, seed=0, image_size=16, workers=1, progress=False)
    assert helpers.tree_digest(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["w"]  # no temporary left behind
