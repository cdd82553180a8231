"""Where a graph store finds its images: the dataset directory recorded relative to the store (a
store that moves with its dataset keeps working), absolute (old stores), or given again."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from graph import PinBoardGraph
from graph.dataset import build_graph_from_dataset
from graph.features import ImagePathError, ImageRootError

from .conftest import default_tables, write_table


def _dataset(d: Path) -> Path:
    for name, cols in default_tables().items():
        write_table(d, name, "parquet", cols)
    (d / "img").mkdir()
    for pin in (10, 12, 13):
        Image.new("RGB", (4, 4), (pin, 0, 0)).save(d / "img" / f"{pin}.png")
    return d


def _load_images(g: PinBoardGraph) -> list:
    paths = g.features.pin_image_paths(range(g.num_pins))
    return [None if p is None else Image.open(p).getpixel((0, 0))[0] for p in paths]


EXPECTED = [10, None, 12, 13]


@pytest.mark.parametrize("memory_budget", [None, "2GiB"], ids=["in-memory", "out-of-core"])
def test_a_store_moved_with_its_dataset_finds_its_images(tmp_path, memory_budget):
    _dataset(tmp_path / "a" / "data")
    build_graph_from_dataset(tmp_path / "a" / "data", tmp_path / "a" / "store", memory_budget=memory_budget)
    rec = json.loads((tmp_path / "a" / "store" / "manifest.json").read_text())["features"]
    assert rec["root"] == str(tmp_path / "a" / "data") and rec["root_relative"] == "../data"
    assert _load_images(PinBoardGraph.open(tmp_path / "a" / "store")) == EXPECTED
    (tmp_path / "moved").mkdir()
    os.rename(tmp_path / "a", tmp_path / "moved" / "b")
    g = PinBoardGraph.open(tmp_path / "moved" / "b" / "store")
    assert g.features.root == tmp_path / "moved" / "b" / "data"
    assert _load_images(g) == EXPECTED


def test_a_store_inside_its_dataset_moves_with_it(tmp_path):
    _dataset(tmp_path / "data")
    build_graph_from_dataset(tmp_path / "data", tmp_path / "data" / "graph")
    os.rename(tmp_path / "data", tmp_path / "elsewhere")
    assert _load_images(PinBoardGraph.open(tmp_path / "elsewhere" / "graph")) == EXPECTED


def test_a_store_moved_alone_uses_the_absolute_root(tmp_path):
    _dataset(tmp_path / "data")
    build_graph_from_dataset(tmp_path / "data", tmp_path / "store")
    (tmp_path / "x" / "y").mkdir(parents=True)
    os.rename(tmp_path / "store", tmp_path / "x" / "y" / "store")
    g = PinBoardGraph.open(tmp_path / "x" / "y" / "store")
    assert g.features.root == tmp_path / "data" and _load_images(g) == EXPECTED


def test_a_moved_dataset_is_a_clear_error_and_image_root_fixes_it(tmp_path):
    _dataset(tmp_path / "data")
    build_graph_from_dataset(tmp_path / "data", tmp_path / "store")
    (tmp_path / "new").mkdir()
    os.rename(tmp_path / "data", tmp_path / "new" / "data")
    g = PinBoardGraph.open(tmp_path / "store")   # the graph itself needs no images
    assert g.num_pins == 4
    with pytest.raises(ImageRootError) as err:
        g.features.pin_image_paths([0])
    msg = str(err.value)
    assert str(tmp_path / "data") in msg          # the recorded root (and where it resolved)
    assert "../data" in msg and "data.image_root=" in msg and "image_root=DIR" in msg
    with pytest.raises(ImageRootError):
        g.features.check_image_root()
    # Given again: images load, and the containment check holds against the new root.
    g = PinBoardGraph.open(tmp_path / "store", image_root=tmp_path / "new" / "data")
    assert _load_images(g) == EXPECTED
    (tmp_path / "secret.png").write_bytes(b"x")
    os.replace(tmp_path / "new" / "data" / "img" / "13.png", tmp_path / "13.bak")
    os.symlink(tmp_path / "secret.png", tmp_path / "new" / "data" / "img" / "13.png")
    with pytest.raises(ImagePathError, match="outside the dataset directory"):
        g.features.pin_image_paths([3])
    # A given root that does not exist names it and what the store recorded.
    g = PinBoardGraph.open(tmp_path / "store", image_root=tmp_path / "nope")
    with pytest.raises(ImageRootError, match="nope") as err:
        g.features.pin_image_paths([0])
    assert str(tmp_path / "data") in str(err.value)


def test_an_old_store_with_an_absolute_root_still_opens(tmp_path):
    _dataset(tmp_path / "data")
    build_graph_from_dataset(tmp_path / "data", tmp_path / "store")
    manifest_path = tmp_path / "store" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["features"]["root_relative"]     # as written before stores recorded it
    manifest_path.write_text(json.dumps(manifest))
    g = PinBoardGraph.open(tmp_path / "store")
    assert g.features.root == tmp_path / "data" and _load_images(g) == EXPECTED
    shutil.move(tmp_path / "data", tmp_path / "gone")
    with pytest.raises(ImageRootError, match="data.image_root="):
        PinBoardGraph.open(tmp_path / "store").features.pin_image_paths([0])
    assert _load_images(PinBoardGraph.open(tmp_path / "store", image_root=tmp_path / "gone")) == EXPECTED
