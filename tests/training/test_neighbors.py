"""`pinclip neighbors` and training.neighbors: one pin's graph neighborhood beside each run's
nearest neighbors, as text, JSON and a self-contained HTML page."""
from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from training.cli import main as cli_main

K = 4


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_world, text_cache_dir):
    """A 2-step run (embedded once by the first command) and a warm query pin with board mates."""
    import importlib.util
    from pathlib import Path

    from graph import PinBoardGraph
    from training.config import load_train_config
    from training.trainer import Trainer
    spec = importlib.util.spec_from_file_location("_training_conftest", Path(__file__).with_name("conftest.py"))
    conf = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conf)
    root = tmp_path_factory.mktemp("neighbors")
    cfg = conf.tiny_train_config(tiny_world, text_cache_dir, train={"max_steps": 2, "checkpoint_every": 2})
    Trainer(load_train_config(cfg), root / "run").train()
    g = PinBoardGraph.open(root / "run" / "graph")
    cold = set(np.asarray(g.splits.cold_start_pins).tolist())
    warm = next(p for p in range(g.num_pins) if p not in cold and g.boards_of(p).numel() > 0)
    return {"root": root, "run": root / "run", "pin": g.external_pin_ids([warm])[0], "graph": g}


def _neighbors(world, *extra):
    return ["neighbors", str(world["run"]), "--pin", str(world["pin"]), "-k", str(K), "--device", "cpu",
            "--quiet", *map(str, extra)]


def test_text_output_lists_the_pin_k_neighbors_per_run_and_marks(world, capsys):
    assert cli_main(_neighbors(world)) == 0
    out = capsys.readouterr().out
    assert f"pin {world['pin']}" in out
    assert "graph neighborhood: PinSage" in out and "visits" in out
    run_part = out.split(f"{world['run'].name} (run, step 2, fused embedding)")[1].split("\nmarks:")[0]
    rows = [line for line in run_part.splitlines() if re.match(r"^\s+\d+\s", line)]
    assert len(rows) == K
    assert "cosine" in rows[0]
    assert all(re.search(r"\s[B-][C-]\s", r) for r in rows)
    assert "B = board mate" in out and "C = cold-start" in out


def test_json_structure_and_marks_agree_with_the_graph(world, capsys):
    assert cli_main(_neighbors(world, "--json")) == 0
    res = json.loads(capsys.readouterr().out)
    g = world["graph"]
    q = res["pin"]
    assert q["pin_id"] == world["pin"] and q["cold_start"] is False and q["board_mates"] > 0
    gn = res["graph_neighborhood"]
    assert gn["sampler"] == "pinsage_default" and "test" in gn["exclude_splits"]
    assert 0 < len(gn["neighbors"]) <= K and all(n["visits"] > 0 for n in gn["neighbors"])
    assert [n["visits"] for n in gn["neighbors"]] == sorted((n["visits"] for n in gn["neighbors"]), reverse=True)
    assert len(res["runs"]) == 1
    run = res["runs"][0]
    assert run["embedding"] == "fused" and run["step"] == 2 and len(run["neighbors"]) == K
    scores = [n["score"] for n in run["neighbors"]]
    assert scores == sorted(scores, reverse=True)
    mates = set()
    for b in g.boards_of(q["index"]).tolist():
        mates.update(g.pins_of(b).tolist())
    mates.discard(q["index"])
    cold = set(np.asarray(g.splits.cold_start_pins).tolist())
    for n in gn["neighbors"] + run["neighbors"]:
        assert n["index"] != q["index"]
        assert n["board_mate"] == (n["index"] in mates) and n["cold_start"] == (n["index"] in cold)
        assert n["pin_id"] == g.external_pin_ids([n["index"]])[0]
    # Seeded: the graph neighborhood is the same on a second call.
    assert cli_main(_neighbors(world, "--json")) == 0
    assert json.loads(capsys.readouterr().out)["graph_neighborhood"] == gn


def test_html_page_is_self_contained(world, tmp_path, capsys):
    out = tmp_path / "page.html"
    assert cli_main(_neighbors(world, "--html", out)) == 0
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>")
    srcs = re.findall(r"<img[^>]*\ssrc=\"([^\"]*)\"", page)
    assert len(srcs) == len(re.findall(r"<img\b", page)) >= K + 1
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"(href|src)=\"(?!data:)", page) and "http://" not in page and "https://" not in page
    assert "graph neighborhood" in page and world["run"].name in page and "board mate" in page
    # An HTML page is replaced; a file that is not HTML is refused (exit 2, naming it), untouched.
    assert cli_main(_neighbors(world, "--html", out)) == 0
    other = tmp_path / "notes.txt"
    other.write_text("my notes\n")
    capsys.readouterr()
    assert cli_main(_neighbors(world, "--html", other)) == 2
    assert "not an HTML page" in capsys.readouterr().err and other.read_text() == "my notes\n"


def test_unknown_pin_exits_2_naming_it(world, capsys):
    args = _neighbors(world)
    args[args.index("--pin") + 1] = "no-such-pin-42"
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "no-such-pin-42" in err and "no such pin" in err


def test_directories_on_different_graph_stores_are_refused(world, tmp_path, capsys):
    from training.evaluation.run_eval import save_baseline
    store = tmp_path / "other_graph"
    shutil.copytree(world["run"] / "graph", store)
    (store / "manifest.json").write_text((store / "manifest.json").read_text() + "\n")   # other bytes
    import torch
    save_baseline(tmp_path / "base", "other", store, {"fused": torch.randn(world["graph"].num_pins, 8)})
    args = _neighbors(world)
    args.insert(2, str(tmp_path / "base"))
    assert cli_main(args) == 2
    err = capsys.readouterr().err
    assert "different graph stores" in err and str(world["run"]) in err and str(tmp_path / "base") in err


def _browser() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_html_images_load_in_a_headless_browser(world, tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium installed")
    out = tmp_path / "page.html"
    assert cli_main(_neighbors(world, "--html", out)) == 0
    n = len(re.findall(r"<img\b", out.read_text()))
    proc = subprocess.run([browser, "--headless", "--disable-gpu", "--no-sandbox", "--virtual-time-budget=5000",
                           "--dump-dom", out.as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f'data-images="ok {n}"' in proc.stdout, proc.stdout[:2000]
