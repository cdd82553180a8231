"""`pinclip compare` end to end on a tiny synthetic world: every method with two seeds, metrics.json
(seed means), report.md, significance.json, re-runs that reuse everything, refusals."""
from __future__ import annotations

import json

import pytest
import yaml

from training.evaluation.summary import HEADLINE_KEYS

from tests.training.conftest import TINY_DEMO_OVERRIDES as TINY

METHODS = ["pinclip", "clip_only", "frozen_text", "frozen_text_pixels", "graph_only"]


def _args(world, out, *extra):
    return ["compare", "--dataset", str(world), "--out", str(out), "--max-steps", "2", "--graph-steps", "2",
            *[a for kv in TINY for a in ("--set", kv)], *extra]


def _mtimes(root):
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))
            if p.is_file() and ("checkpoints" in p.parts or p.name == "method.json")}


def test_compare_two_seeds_rerun_and_refusal(tiny_world, tmp_path, capsys, monkeypatch):
    from training.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "cmp"
    assert main(_args(tiny_world, out, "--seeds", "2")) == 0
    printed = capsys.readouterr().out
    assert "[1/10] building the graph store" in printed and "[10/10] evaluating" in printed

    runs = out / "runs"
    assert sorted(p.name for p in runs.iterdir()) == ["clip_only", "clip_only-seed1", "frozen_text", "frozen_text_pixels", "graph_only",
                                                     "graph_only-seed1", "pinclip", "pinclip-seed1"]
    for name in ("pinclip", "clip_only"):
        assert (runs / name / "checkpoints" / "step_00000002.json").is_file()
        cfg = yaml.safe_load((runs / f"{name}-seed1" / "config.yaml").read_text())
        assert cfg["train"]["seed"] == cfg["sampler"]["seed"] == 1      # replicate 1: the configs' seeds + 1
        assert yaml.safe_load((runs / name / "config.yaml").read_text())["train"]["seed"] == 0
    assert json.loads((runs / "graph_only-seed1" / "method.json").read_text())["info"]["seed"] == 1

    # metrics.json: the mean over the seeds of each method (frozen_text: its one directory).
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == METHODS
    assert set(metrics["pinclip"]) == set(HEADLINE_KEYS)
    assert metrics["graph_only"]["cold_start_board_recall@10"] is None
    per_seed = [json.loads((runs / d / "evaluation.json").read_text())["metrics"]["board_recall@10"]
                for d in ("pinclip", "pinclip-seed1")]
    assert metrics["pinclip"]["board_recall@10"] == pytest.approx(sum(per_seed) / 2)

    sig = json.loads((out / "significance.json").read_text())
    assert sig["confidence"] == 0.95 and "pinclip vs clip_only" in sig["paired"]
    assert set(sig["methods"]) == set(METHODS)
    assert sig["seeds"]["counts"] == {"pinclip": 2, "clip_only": 2, "frozen_text": 1, "frozen_text_pixels": 1,
                                       "graph_only": 2}
    report = (out / "report.md").read_text()
    assert "mean over the 2 seeds" in report and "## Confidence intervals" in report
    assert json.loads((out / "compare.json").read_text())["seeds"] == 2
    assert json.loads((out / "timings.json").read_text())["total"] > 0

    # A re-run trains and builds nothing again (checkpoints and baselines untouched).
    before = _mtimes(runs)
    assert main(_args(tiny_world, out, "--seeds", "2")) == 0
    printed = capsys.readouterr().out
    assert printed.count("complete (step 2): reused") == 4 and "graph-only baseline: reused (seed 1)" in printed
    assert _mtimes(runs) == before
    assert json.loads((out / "metrics.json").read_text()) == metrics

    # Other parameters: refused with the difference; nothing deleted or rewritten.
    assert main(_args(tiny_world, out, "--seeds", "1")) == 2
    err = capsys.readouterr().err
    assert "other parameters" in err and "'seeds': (2, 1)" in err
    assert _mtimes(runs) == before and json.loads((out / "compare.json").read_text())["seeds"] == 2


def test_compare_refuses_bad_parameters_before_work(tiny_world, tmp_path, capsys):
    from training.cli import main
    out = tmp_path / "cmp"
    assert main(_args(tiny_world, out, "--set", "train.bogus=1")) == 2
    assert "unknown key 'train.bogus'" in capsys.readouterr().err
    assert main(_args(tiny_world, out, "--set", "train.batch_size")) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err
    assert main(_args(tiny_world, out, "--seeds", "0")) == 2
    assert "--seeds 0" in capsys.readouterr().err
    assert not out.exists()
    # An --out of the user's (not a comparison) is refused and left as it was.
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(_args(tiny_world, mine)) == 2
    assert "refusing to replace it" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_methods_registry_is_extensible():
    from training.compare import BASELINES, DEFAULT_METHODS, METHODS as REGISTRY, Method, method_dirs
    assert list(DEFAULT_METHODS) == METHODS and set(BASELINES) == {"frozen-text", "frozen-vlm", "graph-only", "frozen-text-pixels"}
    assert REGISTRY["pinclip"].config == "demo" and REGISTRY["clip_only"].config == "clip_only"
    assert not REGISTRY["frozen_text"].seeded and REGISTRY["graph_only"].seeded
    dirs = method_dirs(__import__("pathlib").Path("runs"), METHODS, 3)
    assert [p.name for p in dirs["pinclip"]] == ["pinclip", "pinclip-seed1", "pinclip-seed2"]
    assert [p.name for p in dirs["frozen_text"]] == ["frozen_text"]
    with pytest.raises(ValueError):
        Method("bad", config="demo", baseline="frozen-text")
