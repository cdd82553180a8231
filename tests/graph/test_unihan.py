"""The Unihan development dataset (``graph.unihan``, ``pinclip datasets unihan``).

The builds need the Debian packages unicode-data and fonts-wqy-microhei (``make
real-data-deps``); without them those tests skip. The rules (selection, keywords, fresh draw)
are also tested on hand-made data, which needs neither.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from graph import unihan, unihan_source
from graph.dataset import build_graph_from_dataset
from graph.output_dir import OutputDirError
from graph.unihan import (MissingDataPackageError, UnihanData, build_unihan_dataset, definition_words,
                          select_characters)

MAX_PINS, SIZE, SEED = 250, 32, 3


def _packages_missing() -> str | None:
    try:
        unihan.find_unihan_dir()
        unihan.find_font()
    except MissingDataPackageError as exc:
        return str(exc)
    return None


needs_packages = pytest.mark.skipif(
    _packages_missing() is not None,
    reason=f"Unihan database or CJK font not installed (sudo apt-get install unicode-data "
           f"fonts-wqy-microhei, or make real-data-deps): {_packages_missing()}")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    if _packages_missing() is not None:
        pytest.skip("Unihan database or CJK font not installed (make real-data-deps)")
    out = tmp_path_factory.mktemp("unihan") / "ds"
    build_unihan_dataset(out, max_pins=MAX_PINS, image_size=SIZE, seed=SEED, progress=False)
    return out


def _tables(d: Path) -> dict[str, pa.Table]:
    return {n: pq.read_table(d / f"{n}.parquet") for n in ("pins", "boards", "edges")}


# ------------------------------------------------------------------------------ real builds
@needs_packages
def test_schema_and_format(built):
    t = _tables(built)
    assert t["pins"].schema.names == ["pin_id", "text", "image", "fresh"]
    assert [f.type for f in t["pins"].schema] == [pa.string(), pa.string(), pa.string(), pa.bool_()]
    assert t["boards"].schema.names == ["board_id", "name"]
    assert t["edges"].schema.names == ["pin_id", "board_id"]
    pins = t["pins"].to_pylist()
    assert 0 < len(pins) <= MAX_PINS
    assert len({p["pin_id"] for p in pins}) == len(pins)
    assert pins[0]["pin_id"] == "U+4E00"   # 一: kFrequency 1, lowest code point among those
    assert all(p["image"] == f"images/{p['pin_id']}.png" for p in pins)
    assert sum(p["text"] is not None for p in pins) >= 0.95 * len(pins)
    assert len({b["board_id"] for b in t["boards"].to_pylist()}) == t["boards"].num_rows
    assert all(b["name"] for b in t["boards"].to_pylist())


@needs_packages
def test_build_graph_accepts_it_and_uses_fresh_as_cold_start(built, tmp_path):
    g = build_graph_from_dataset(built, tmp_path / "g", progress=False)
    t = _tables(built)
    assert (g.num_pins, g.num_boards, g.num_edges) == (t["pins"].num_rows, t["boards"].num_rows,
                                                       t["edges"].num_rows)
    fresh = np.asarray(t["pins"].column("fresh").to_pylist())
    assert np.array_equal(np.asarray(g.splits.cold_start_pins), np.flatnonzero(fresh))
    assert g.splits.params["cold_start_source"] == "fresh_flag"
    assert g.manifest["source"]["rows"]["pins"] == len(fresh)


@needs_packages
def test_boards_have_three_pins_and_all_kinds(built):
    t = _tables(built)
    sizes = Counter(t["edges"].column("board_id").to_pylist())
    board_ids = t["boards"].column("board_id").to_pylist()
    assert set(sizes) == set(board_ids)
    assert min(sizes.values()) >= unihan.MIN_BOARD_PINS
    kinds = Counter(b.split(":", 1)[0] for b in board_ids)
    assert set(kinds) == {"radical", "phonetic", "meaning"} and min(kinds.values()) >= 1
    names = dict(zip(board_ids, t["boards"].column("name").to_pylist()))
    assert names["radical:9"] == "radical 9 (man)"
    assert names["radical:149'"] == "radical 149' (speech, simplified)"
    # every pin is on a board, no edge repeats
    edges = list(zip(t["edges"].column("pin_id").to_pylist(), t["edges"].column("board_id").to_pylist()))
    assert len(set(edges)) == len(edges)
    assert {p for p, _ in edges} == set(t["pins"].column("pin_id").to_pylist())
    per_pin = Counter(p for p, b in edges if b.startswith("meaning:"))
    assert max(per_pin.values()) <= unihan.MAX_MEANING_BOARDS_PER_PIN


@needs_packages
def test_fresh_fraction_and_boards_stay_warm(built):
    t = _tables(built)
    fresh = dict(zip(t["pins"].column("pin_id").to_pylist(), t["pins"].column("fresh").to_pylist()))
    assert sum(fresh.values()) == round(0.1 * len(fresh))
    warm = Counter(b for p, b in zip(t["edges"].column("pin_id").to_pylist(),
                                     t["edges"].column("board_id").to_pylist()) if not fresh[p])
    assert min(warm[b] for b in t["boards"].column("board_id").to_pylist()) >= unihan.MIN_WARM_PINS


@needs_packages
def test_images_are_centred_black_glyphs_on_white(built):
    pins = _tables(built)["pins"].to_pylist()
    for p in pins[:20]:
        im = np.asarray(Image.open(built / p["image"]))
        assert im.shape == (SIZE, SIZE, 3) and im.dtype == np.uint8
        ink = im.min(axis=2) < 128
        assert 0.03 < ink.mean() < 0.8 and im[0, 0].tolist() == [255, 255, 255]
        ys, xs = np.nonzero(ink)
        assert abs((ys.min() + ys.max()) / 2 - (SIZE - 1) / 2) <= 2
        assert abs((xs.min() + xs.max()) / 2 - (SIZE - 1) / 2) <= 2


@needs_packages
def test_deterministic_and_seed_moves_only_fresh(built, tmp_path, helpers):
    again = tmp_path / "again"
    build_unihan_dataset(again, max_pins=MAX_PINS, image_size=SIZE, seed=SEED, progress=False)
    assert helpers.tree_digest(built) == helpers.tree_digest(again)
    # another seed: same pins, boards, edges and images; other fresh pins
    build_unihan_dataset(again, max_pins=MAX_PINS, image_size=SIZE, seed=SEED + 1, progress=False)
    a, b = _tables(built), _tables(again)
    assert a["boards"].equals(b["boards"]) and a["edges"].equals(b["edges"])
    assert a["pins"].column("pin_id").equals(b["pins"].column("pin_id"))
    assert a["pins"].column("fresh") != b["pins"].column("fresh")


@needs_packages
def test_refuses_to_replace_a_users_directory(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match="notes.txt"):
        build_unihan_dataset(mine, max_pins=20, image_size=SIZE, progress=False)
    assert (mine / "notes.txt").read_text() == "keep me"


def test_missing_packages_name_the_package_and_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setattr(unihan_source, "UNIHAN_DIRS", (str(tmp_path / "no-unicode"),))
    with pytest.raises(MissingDataPackageError, match=r"unicode-data.*apt-get install unicode-data "
                                                      r"fonts-wqy-microhei.*make real-data-deps"):
        build_unihan_dataset(tmp_path / "out", max_pins=10, progress=False)
    monkeypatch.setattr(unihan_source, "FONT_PATHS", ((str(tmp_path / "no-font.ttc"), 0),))
    with pytest.raises(MissingDataPackageError, match=r"fonts-wqy-microhei.*apt-get install"):
        unihan.find_font()
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------------------ the rules, offline
def _data(**kw) -> UnihanData:
    base = dict(definition={}, frequency={}, phonetic={}, radical={})
    base.update(kw)
    return UnihanData(**base)


def test_selection_frequency_first_then_definitions_by_code_point():
    d = _data(frequency={0x5000: 2, 0x4000: 2, 0x6000: 1},
              definition={0x3000: "a", 0x3001: "b", 0x3002: "c", 0x5000: "x"},
              radical={0x3000: "1", 0x3002: "2"})
    assert select_characters(d, None) == [0x6000, 0x4000, 0x5000]
    assert select_characters(d, 2) == [0x6000, 0x4000]
    # beyond the common ones: defined characters with a radical (and a glyph), by code point
    assert select_characters(d, 5) == [0x6000, 0x4000, 0x5000, 0x3000, 0x3002]
    assert select_characters(d, 5, has_glyph=lambda ch: ch != chr(0x3000)) == [0x6000, 0x4000, 0x5000, 0x3002]


def test_definition_words_drop_stop_words_short_words_and_code_points():
    assert definition_words("(same as U+4E18 丘) hillock or mound") == ["hillock", "mound"]
    assert definition_words("variant of U+5E7A; an ox, a cow") == ["cow"]
    assert definition_words(None) == []


def test_meaning_boards_fold_plurals_and_cap_per_pin():
    texts = ["trees, wood", "tree", "a tree; wood; boards", "wood",
             "alpha beta gamma delta epsilon", "alpha beta gamma delta epsilon",
             "alpha beta gamma delta epsilon"]
    kws = unihan._meaning_keywords(texts)
    assert kws[0] == ["tree", "wood"] and kws[1] == ["tree"] and kws[3] == ["wood"]
    assert kws[4] == ["alpha", "beta", "gamma", "delta"][:unihan.MAX_MEANING_BOARDS_PER_PIN]


def test_fresh_draw_keeps_boards_warm_and_fills_the_quota():
    # 10 pins on one board, 2 pins alone on another board of 3
    ep = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9], np.int64)
    eb = np.array([0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0], np.int64)
    ep, eb = ep[np.lexsort((eb, ep))], eb[np.lexsort((eb, ep))]
    f = unihan._draw_fresh(10, ep, eb, 2, 0.3, seed=0)
    assert f.sum() == 3
    assert (~f[np.unique(ep[eb == 1])]).sum() >= unihan.MIN_WARM_PINS
    assert np.array_equal(f, unihan._draw_fresh(10, ep, eb, 2, 0.3, seed=0))
    assert unihan._draw_fresh(10, ep, eb, 2, 0.9, seed=0).sum() == 9   # quota over warmth


def test_radical_board_names():
    names = {"85": "water", "120": "silk"}
    assert unihan.radical_board_name("85", names) == "radical 85 (water)"
    assert unihan.radical_board_name("120'", names) == "radical 120' (silk, simplified)"
    assert unihan.radical_board_name("7", names) == "radical 7"
