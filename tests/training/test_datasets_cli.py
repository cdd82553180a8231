"""``pinclip datasets unihan`` (the builder itself: tests/graph/test_unihan.py)."""
from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from graph import unihan
from training.cli import main


def _missing() -> bool:
    try:
        unihan.find_unihan_dir()
        unihan.find_font()
    except unihan.MissingDataPackageError:
        return True
    return False


@pytest.mark.skipif(_missing(), reason="Unihan database or CJK font not installed "
                    "(sudo apt-get install unicode-data fonts-wqy-microhei, or make real-data-deps)")
def test_unihan_command_writes_a_dataset_and_a_summary(tmp_path, capsys):
    out = tmp_path / "unihan"
    assert main(["datasets", "unihan", "--out", str(out), "--max-pins", "150", "--image-size", "24",
                 "--seed", "1", "--quiet"]) == 0
    printed = capsys.readouterr().out
    meta = json.loads((out / "unihan.json").read_text())
    assert meta["generator"] == "graph.unihan" and meta["params"]["max_pins"] == 150
    pins = pq.read_table(out / "pins.parquet")
    assert meta["counts"]["pins"] == pins.num_rows > 0
    for word in ("pins", "fresh", "radical", "phonetic", "meaning", "edges", " s"):
        assert word in printed
    # a second build over its own output is allowed (replaced atomically) ...
    assert main(["datasets", "unihan", "--out", str(out), "--max-pins", "150", "--image-size", "24",
                 "--quiet"]) == 0
    # ... and build-graph accepts it
    assert main(["build-graph", str(out), "--out", str(tmp_path / "g"), "--quiet"]) == 0


def test_missing_packages_exit_2_naming_the_package(tmp_path, capsys):
    code = main(["datasets", "unihan", "--out", str(tmp_path / "u"), "--max-pins", "10",
                 "--unihan-dir", str(tmp_path / "nowhere"), "--quiet"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("pinclip datasets: error: ") and "unicode-data" in err
    assert "apt-get install unicode-data fonts-wqy-microhei" in err and "make real-data-deps" in err
    assert not (tmp_path / "u").exists()


def test_datasets_needs_a_dataset_name(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["datasets"])
    assert exc.value.code == 2
    assert "unihan" in capsys.readouterr().err
