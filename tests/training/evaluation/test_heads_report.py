"""Headline head selection (fair baselines), topic-level t2i precision, per-query files and the
report's heads table and confidence intervals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from training.evaluation.heads import select_headline_head, trained_heads
from training.evaluation.per_query import load_per_query
from training.evaluation.report import bar_checks, heads_table, write_report
from training.evaluation.run_eval import evaluate_dir, evaluate_embeddings, run_heads_trained, save_baseline
from training.evaluation.significance import write_significance
from training.evaluation.summary import _topic_precision, method_metrics

from .conftest import board_embeddings, synthetic_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """(graph store path, graph, truth) of a 1,500-pin world without images (~90 val and test edges)."""
    return synthetic_store(tmp_path_factory, "heads", 1500, 150)


# ------------------------------------------------------------------------------ which heads train
@pytest.mark.parametrize("loss, heads", [
    ({"image_text": "clip", "image_text_weight": 1.0, "neighbor_fused_weight": 0.0, "neighbor_image_weight": 0.0,
      "neighbor_cross_modal_weight": 0.0, "cross_modal": True}, ["image", "text"]),          # CLIP-only
    ({"image_text": "clip", "image_text_weight": 1.0, "neighbor_fused_weight": 1.0, "neighbor_image_weight": 0.5,
      "neighbor_cross_modal_weight": 0.25, "cross_modal": True}, ["fused", "image", "text"]),
    ({"image_text": "none", "neighbor_fused_weight": 1.0}, ["fused"]),
    ({"image_text": "siglip", "image_text_weight": 0.0, "neighbor_image_weight": 0.5}, ["fused", "image"]),
    ({"image_text": "none", "neighbor_cross_modal_weight": 0.3, "cross_modal": True}, ["image", "text"]),
    ({"image_text": "none", "neighbor_cross_modal_weight": 0.3, "cross_modal": False}, []),
])
def test_trained_heads_follow_the_loss_weights(loss, heads):
    assert trained_heads(loss) == heads


def test_run_heads_come_from_the_model_config(tmp_path):
    (tmp_path / "model_config.json").write_text(json.dumps({"loss": {
        "image_text": "clip", "image_text_weight": 1.0, "neighbor_fused_weight": 0.0, "neighbor_image_weight": 0.0,
        "neighbor_cross_modal_weight": 0.0, "cross_modal": True}}))
    assert run_heads_trained(tmp_path) == ["image", "text"]


def test_selection_picks_the_val_best_trained_head_never_an_untrained_one():
    val = {"fused": 0.9, "image": 0.5, "text": 0.6}
    assert select_headline_head(["image", "text", "fused"], ["image", "text", "fused"], val)[0] == "fused"
    # The untrained fused head scores best on validation, yet is never chosen.
    head, why = select_headline_head(["image", "text", "fused"], ["image", "text"], val)
    assert head == "text" and "validation" in why
    assert select_headline_head(["text"], ["text"], None) == ("text", "the only trained head")
    head, why = select_headline_head(["image", "text", "fused"], ["image", "text"], {})
    assert head == "image" and "no validation edges" in why          # designated: first trained in order
    assert select_headline_head(["image", "text", "fused"], ["image", "text", "fused"], {})[0] == "fused"


def test_evaluation_scores_the_chosen_head_and_keeps_every_head(store):
    path, g, _ = store
    good = board_embeddings(g, 0.2, seed=0)
    mid = board_embeddings(g, 2.0, seed=1)
    bad = torch.randn(g.num_pins, 32, generator=torch.Generator().manual_seed(2))
    emb = {"fused": good, "image": mid, "text": bad}
    pq: dict = {}
    ev = evaluate_embeddings(g, emb, "clip_only", heads_trained=["image", "text"], per_query=pq)
    assert ev["headline_head"] == "image" and ev["heads_trained"] == ["image", "text"]
    assert ev["heads"]["fused"]["trained"] is False and ev["heads"]["image"]["trained"] is True
    assert ev["heads"]["fused"]["val_board_recall@10"] > ev["heads"]["image"]["val_board_recall@10"]
    assert ev["heads"]["image"]["val_board_recall@10"] > ev["heads"]["text"]["val_board_recall@10"]
    assert ev["metrics"]["board_recall@10"] == ev["heads"]["image"]["board_recall@10"]
    assert ev["metrics"]["board_recall@10"] < ev["heads"]["fused"]["board_recall@10"]
    assert ev["counts"]["val_edges"] > 0
    # Per-query values behind the headline numbers: their mean is the metric.
    for name in ("board_recall@10", "board_mrr", "cold_start_board_recall@10", "t2i_recall@10", "i2t_recall@10",
                 "cold_start_t2i_recall@10", "cold_start_i2t_recall@10", "t2i_topic_precision@10"):
        pins, values = pq[name]
        assert pins.shape == values.shape and len(np.unique(pins)) == len(pins)
        assert values.mean() == pytest.approx(ev["metrics"][name]), name
    all_trained = evaluate_embeddings(g, emb, "pinclip")
    assert all_trained["headline_head"] == "fused"


def test_topic_precision_on_a_hand_made_case():
    # 12 pins, topics 0 (pins 0-5) and 1 (pins 6-11); images and captions are one-hot topics,
    # except pin 11's caption, which points at topic 0; pin 5's topic is unknown.
    topics = np.array([0] * 6 + [1] * 6)
    topics_known = topics.copy()
    topics_known[5] = -1
    img = torch.nn.functional.one_hot(torch.from_numpy(topics), 2).float()
    txt = img.clone()
    txt[11] = torch.tensor([1.0, 0.0])
    pq: dict = {}
    out = _topic_precision(img, txt, torch.arange(12), topics_known, 10, "torch", pq)
    pins, prec = pq["t2i_topic_precision@10"]
    assert 5 not in pins.tolist() and len(pins) == 11
    # Topic 0 queries: the 6 images of pins 0-5 lead (pin 5's topic is unknown: no match), then 4
    # of topic 1: 5 of 10 match. Topic 1 queries: 6 of 10. Pin 11's caption leads to pins 0-5,
    # then 4 topic-1 images: 4 of 10.
    by_pin = dict(zip(pins.tolist(), prec.tolist()))
    assert by_pin[0] == pytest.approx(0.5) and by_pin[6] == pytest.approx(0.6) and by_pin[11] == pytest.approx(0.4)
    assert out["t2i_topic_precision@10"] == pytest.approx(prec.mean())
    # Ceiling of the exact-pin recall: 10 / 5 and 10 / 6 images per topic, capped at 1.
    assert out["t2i_recall@10_topic_ceiling"] == pytest.approx(1.0)
    out5 = _topic_precision(img, txt, torch.arange(12), topics_known, 2, "torch", None)
    assert out5["t2i_recall@2_topic_ceiling"] == pytest.approx((5 * 2 / 5 + 6 * 2 / 6) / 11)


def test_topic_precision_in_method_metrics(store):
    _, g, truth = store
    from training.evaluation.run_eval import truth_labels
    lab = truth_labels(g)["topic"]
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(int(lab.max()) + 1, 16, generator=gen)
    emb = {"image": centers[torch.from_numpy(lab)] + 0.1 * torch.randn(g.num_pins, 16, generator=gen),
           "text": centers[torch.from_numpy(lab)] + 0.1 * torch.randn(g.num_pins, 16, generator=gen)}
    m = method_metrics(g, emb, topics=lab, max_overlap_seeds=0)
    assert m["t2i_topic_precision@10"] > 0.95                 # captions find their topic
    assert m["t2i_recall@10"] <= m["t2i_recall@10_topic_ceiling"] + 0.05
    assert 0 < m["t2i_recall@10_topic_ceiling"] < 1 and m["t2i_topic_pins_per_topic"] > 10
    assert "t2i_topic_precision@10" not in method_metrics(g, emb, max_overlap_seeds=0)


def test_cold_start_text_to_image_tells_memorized_pairs_from_learned_ones(store):
    """A model that paired only the pins it trained on (warm: the caption and the image share a
    random vector) scores full warm recall and chance on the cold-start pins; the cold-start
    metric counts only cold-start pins, so it sees the difference."""
    _, g, _ = store
    cold = g.splits.is_cold_start(g.num_pins)
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(g.num_pins, 64, generator=gen)
    img, txt = shared.clone(), shared.clone()
    txt[cold] = torch.randn(int(cold.sum()), 64, generator=gen)    # never trained: no pairing learned
    pq: dict = {}
    m = method_metrics(g, {"image": img, "text": txt}, max_overlap_seeds=0, per_query=pq)
    assert m["t2i_recall@10"] == pytest.approx(1.0) and m["i2t_recall@10"] == pytest.approx(1.0)
    assert m["cold_start_t2i_recall@10"] < 0.5 and m["cold_start_i2t_recall@10"] < 0.5
    pins, values = pq["cold_start_t2i_recall@10"]
    assert bool(cold[torch.from_numpy(pins)].all()) and len(pins) == int(cold.sum())
    assert values.mean() == pytest.approx(m["cold_start_t2i_recall@10"])
    assert not bool(cold[torch.from_numpy(pq["t2i_recall@10"][0])].any())
    generalizes = method_metrics(g, {"image": shared, "text": shared}, max_overlap_seeds=0)
    assert generalizes["cold_start_t2i_recall@10"] == pytest.approx(1.0)


def test_report_shows_heads_and_intervals(store, tmp_path):
    path, g, _ = store
    good = board_embeddings(g, 0.2, seed=0)
    mid = board_embeddings(g, 2.0, seed=1)
    rand = torch.randn(g.num_pins, 32, generator=torch.Generator().manual_seed(2))
    save_baseline(tmp_path / "pinclip", "pinclip", path, {"image": mid, "text": rand, "fused": good})
    # A CLIP-only-like method whose fused head is untrained (and happens to look good).
    save_baseline(tmp_path / "clip_only", "clip_only", path, {"image": mid, "text": rand, "fused": good},
                  heads_trained=["image", "text"])
    save_baseline(tmp_path / "frozen_text", "frozen_text", path, {"text": rand})
    dirs = [tmp_path / "pinclip", tmp_path / "clip_only", tmp_path / "frozen_text"]
    ev = evaluate_dir(tmp_path / "clip_only")
    assert ev["headline_head"] == "image"
    assert set(load_per_query(tmp_path / "clip_only")) >= {"board_recall@10", "board_mrr", "t2i_recall@10"}
    sig = write_significance(tmp_path / "cmp", {"pinclip": [dirs[0]], "clip_only": [dirs[1]],
                                                "frozen_text": [dirs[2]]}, resamples=200)
    assert sig["paired"]["pinclip vs clip_only"]["board_recall@10"]["interval"][0] > 0
    rep = write_report(dirs, tmp_path / "report", significance=tmp_path / "cmp" / "significance.json")
    md = (tmp_path / "report" / "report.md").read_text()
    metrics = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert metrics["clip_only"]["board_recall@10"] == ev["heads"]["image"]["board_recall@10"]
    assert metrics["pinclip"]["board_recall@10"] > metrics["clip_only"]["board_recall@10"]
    assert "## Heads" in md and "| clip_only | fused | **no (untrained)** |  |" in md
    assert "| clip_only | image | yes | **yes** |" in md
    assert "## Confidence intervals" in md and "| pinclip vs clip_only | board_recall@10 |" in md
    lo, hi = sig["paired"]["pinclip vs clip_only"]["board_recall@10"]["interval"]
    assert f"[{lo:.3f}, {hi:.3f}]" in md
    assert "## Text -> image by topic" in md and "10 / pins-per-topic" in md
    check = next(c for c in rep["checks"] if c["metric"] == "board_recall@10" and c["baseline"] == "clip_only")
    assert check["interval"] == [lo, hi] and check["passed"]
    rows = heads_table(rep["evaluations"])
    assert rows[0][:4] == ["method", "head", "trained", "headline"] and len(rows) == 1 + 3 + 3 + 1
    # Without significance the report still renders (the demo's call).
    write_report(dirs, tmp_path / "plain", title="t", extra_md="x")
    assert "## Confidence intervals" not in (tmp_path / "plain" / "report.md").read_text()
    from training.cli import main
    assert main(["report", *map(str, dirs), "--out", str(tmp_path / "r_cli"), "--quiet",
                 "--significance", str(tmp_path / "cmp")]) == 0
    assert "## Confidence intervals" in (tmp_path / "r_cli" / "report.md").read_text()
    assert main(["report", *map(str, dirs), "--out", str(tmp_path / "r_bad"), "--quiet",
                 "--significance", str(tmp_path / "nothing.json")]) == 2


def test_bar_checks_need_the_interval_above_zero_for_a_gain():
    m = {"pinclip": {"board_recall@10": 0.6, "t2i_recall@10": 0.2},
         "clip_only": {"board_recall@10": 0.5, "t2i_recall@10": 0.2}}
    sig = {"paired": {"pinclip vs clip_only": {
        "board_recall@10": {"difference": 0.1, "interval": [-0.01, 0.2]},
        "t2i_recall@10": {"difference": 0.0, "interval": [-0.02, 0.02]}}}}
    plain = {c["metric"]: c for c in bar_checks(m)}
    assert plain["board_recall@10"]["passed"]                      # +20% on the point estimates
    checked = {c["metric"]: c for c in bar_checks(m, sig)}
    assert not checked["board_recall@10"]["passed"]                # the interval reaches below 0
    assert checked["board_recall@10"]["interval"] == [-0.01, 0.2]
    assert checked["t2i_recall@10"]["passed"] and checked["t2i_recall@10"]["interval_supports"] is False
    sig["paired"]["pinclip vs clip_only"]["board_recall@10"]["interval"] = [0.02, 0.2]
    assert {c["metric"]: c for c in bar_checks(m, sig)}["board_recall@10"]["passed"]
    del sig["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert not {c["metric"]: c for c in bar_checks(m, sig)}["board_recall@10"]["passed"]   # no interval
