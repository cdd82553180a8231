"""`pinclip demo` end to end on a tiny world: every method, metrics.json, report.md, re-runs."""
from __future__ import annotations

import json

from training.evaluation.summary import HEADLINE_KEYS

from tests.training.conftest import TINY_DEMO_OVERRIDES as TINY


def test_demo_tiny_end_to_end_and_rerun(tmp_path, capsys, monkeypatch):
    from training.cli import main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--pins", "150", "--boards", "15", "--max-steps", "2",
            "--graph-steps", "3", "--image-size", "32", *[a for kv in TINY for a in ("--set", kv)]]
    assert main(args) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics) == ["pinclip", "clip_only", "frozen_text", "frozen_text_pixels", "graph_only"]
    assert set(metrics["pinclip"]) == set(HEADLINE_KEYS) == set(metrics["clip_only"])
    for baseline in ("frozen_text", "frozen_text_pixels"):
        assert "t2i_recall@10" not in metrics[baseline] and metrics[baseline]["board_recall@10"] is not None
    assert metrics["graph_only"]["cold_start_board_recall@10"] is None
    for name in ("pinclip", "clip_only"):
        assert (out / "runs" / name / "checkpoints" / "step_00000002.json").is_file()
    report = (out / "report.md").read_text()
    assert "## The bar" in report and "pinclip vs frozen_text" in report
    assert "[8/8]" in printed and "vs clip_only on board_recall@10" in printed
    timings = json.loads((out / "timings.json").read_text())
    assert timings["total"] > 0

    # A re-run reuses every finished step and writes the same metrics.
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "complete (step 2): reused" in printed and "graph-only baseline: reused" in printed
    assert json.loads((out / "metrics.json").read_text()) == metrics
    # Other parameters into the same directory: refused, nothing overwritten.
    assert main([*args, "--set", "train.batch_size=8"]) == 2
    assert "other parameters" in capsys.readouterr().err
    assert json.loads((out / "demo.json").read_text())["image_size"] == 32
