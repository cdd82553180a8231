"""Paired bootstrap intervals (significance.json) and per-query scores."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from training.evaluation.per_query import load_per_query, save_per_query
from training.evaluation.significance import (bootstrap_mean_interval, paired_bootstrap_interval, significance,
                                              write_significance)


def _scores(pins, values, metric="board_recall@10"):
    return {metric: (np.asarray(pins), np.asarray(values, dtype=float))}


def test_interval_contains_the_estimate_and_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    widths = []
    for q in (100, 400, 1600):
        v = (rng.random(q) < 0.4).astype(float)
        mean, (lo, hi) = bootstrap_mean_interval(v, resamples=1000, seed=0, metric="m")
        assert mean == pytest.approx(v.mean())
        assert lo <= mean <= hi
        widths.append(hi - lo)
    assert widths[0] > widths[1] > widths[2]
    assert widths[0] / widths[2] == pytest.approx(4.0, rel=0.3)          # ~ 1 / sqrt(Q)


def test_identical_methods_differ_by_exactly_zero():
    rng = np.random.default_rng(1)
    pins, v = np.arange(300), rng.random(300)
    s = significance({"pinclip": [_scores(pins, v)], "clip_only": [_scores(pins, v)]}, resamples=200)
    p = s["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert p["difference"] == 0 and p["interval"] == [0.0, 0.0] and p["queries"] == 300


def test_shifted_method_excludes_zero_and_order_of_queries_does_not_matter():
    rng = np.random.default_rng(2)
    pins = np.arange(500)
    a = rng.random(500)
    b = a - 0.05 + 0.02 * rng.standard_normal(500)
    perm = rng.permutation(500)            # the other method lists its queries in another order
    s = significance({"pinclip": [_scores(pins, a)], "clip_only": [_scores(pins[perm], b[perm])]}, resamples=500)
    p = s["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert p["difference"] == pytest.approx(0.05, abs=0.005)
    assert 0 < p["interval"][0] <= p["difference"] <= p["interval"][1]
    lo, hi = s["methods"]["pinclip"]["board_recall@10"]
    assert lo <= s["values"]["pinclip"]["board_recall@10"] <= hi


def test_paired_interval_is_narrower_than_unpaired_on_correlated_data():
    rng = np.random.default_rng(3)
    base = rng.random(800)                     # per-query difficulty shared by both methods
    a = base + 0.05 * rng.standard_normal(800)
    b = base - 0.01 + 0.05 * rng.standard_normal(800)
    _, (plo, phi) = paired_bootstrap_interval(a, b, resamples=1000, seed=0)
    # Unpaired: independent resamples of each method.
    _, (alo, ahi) = bootstrap_mean_interval(a, resamples=1000, seed=1)
    _, (blo, bhi) = bootstrap_mean_interval(b, resamples=1000, seed=2)
    unpaired = np.hypot((ahi - alo) / 2, (bhi - blo) / 2) * 2
    assert (phi - plo) < 0.5 * unpaired
    assert plo > 0                             # the paired test sees the small, consistent gain


def test_only_common_queries_and_present_metrics_are_compared():
    pins = np.arange(10)
    ref = {"board_recall@10": (pins, np.ones(10)), "t2i_recall@10": (pins, np.ones(10))}
    other = {"board_recall@10": (pins[5:], np.zeros(5))}        # fewer queries, no t2i
    s = significance({"pinclip": [ref], "frozen_text": [other]}, resamples=50)
    p = s["paired"]["pinclip vs frozen_text"]
    assert set(p) == {"board_recall@10"} and p["board_recall@10"]["queries"] == 5
    assert "t2i_recall@10" not in s["methods"]["frozen_text"]
    assert "seeds" not in s


def test_seeds_add_training_variance_and_pair_by_position():
    rng = np.random.default_rng(4)
    pins = np.arange(400)
    base = rng.random(400)
    ref = [_scores(pins, base + off) for off in (0.10, 0.12, 0.08)]
    oth = [_scores(pins, base + off) for off in (0.0, 0.01, 0.02)]
    one = [_scores(pins, base)]
    s = significance({"pinclip": ref, "clip_only": oth, "frozen_text": one}, resamples=500)
    seeds = s["seeds"]
    assert seeds["counts"] == {"pinclip": 3, "clip_only": 3, "frozen_text": 1}
    ps = seeds["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert ps["per_seed"] == pytest.approx([0.10, 0.11, 0.06])
    assert ps["difference"] == pytest.approx(0.09)
    lo, hi = ps["interval"]                              # Student t over 3 seed-paired differences
    assert lo < 0.09 < hi and hi - lo > 0.05
    top = s["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert top["difference"] == pytest.approx(0.09)       # the mean over seeds
    assert top["interval"][0] <= 0.09 <= top["interval"][1]
    # A single-directory method is paired with every seed; no t-interval for one seed.
    assert s["paired"]["pinclip vs frozen_text"]["board_recall@10"]["difference"] == pytest.approx(0.10)
    assert seeds["methods"]["frozen_text"]["board_recall@10"]["interval"] is None
    with pytest.raises(ValueError, match="paired by seed"):
        significance({"pinclip": ref, "clip_only": oth[:2]}, resamples=10)


def test_seeds_with_different_queries_pair_within_each_seed():
    rng = np.random.default_rng(7)
    sets = [np.sort(rng.choice(1000, 300, replace=False)) for _ in range(2)]   # e.g. other splits per seed
    ref = [_scores(p, np.full(p.size, 1.0)) for p in sets]
    oth = [_scores(p[:200], np.full(200, 0.5)) for p in sets]
    s = significance({"pinclip": ref, "clip_only": oth}, resamples=100)
    p = s["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert p["difference"] == pytest.approx(0.5) and p["interval"] == pytest.approx([0.5, 0.5])
    assert p["queries"] == 200 and s["seeds"]["paired"]["pinclip vs clip_only"]["board_recall@10"]["queries"] == [200, 200]
    assert s["seeds"]["methods"]["pinclip"]["board_recall@10"]["queries"] == [300, 300]


def test_vectorized_bootstrap_is_fast():
    rng = np.random.default_rng(5)
    v = rng.random((3, 5000))
    t0 = time.perf_counter()
    bootstrap_mean_interval(v, resamples=1000)
    bootstrap_mean_interval(v[0], resamples=1000)
    assert time.perf_counter() - t0 < 2.0


def test_write_significance_reads_per_query_files(tmp_path, monkeypatch):
    import training.evaluation.run_eval as run_eval
    rng = np.random.default_rng(6)
    pins = np.arange(200)
    for name, shift in (("pinclip", 0.3), ("clip_only", 0.0)):
        d = tmp_path / name
        d.mkdir()
        save_per_query(d / "per_query.npz", {"board_recall@10": (pins, (rng.random(200) < 0.4 + shift).astype(float)),
                                             "board_mrr": (pins, rng.random(200))})
        (d / "evaluation.json").write_text("{}")
    monkeypatch.setattr(run_eval, "current_evaluation", lambda path: {"ok": True})
    out = write_significance(tmp_path / "cmp", {"pinclip": [tmp_path / "pinclip"], "clip_only": [tmp_path / "clip_only"]},
                             resamples=300, seed=1)
    on_disk = json.loads((tmp_path / "cmp" / "significance.json").read_text())
    assert on_disk == out
    assert set(out) >= {"confidence", "resamples", "methods", "paired"}
    assert out["confidence"] == 0.95 and out["resamples"] == 300
    assert set(out["methods"]["pinclip"]) == {"board_recall@10", "board_mrr"}
    p = out["paired"]["pinclip vs clip_only"]["board_recall@10"]
    assert p["interval"][0] > 0
    # Seeded: the same call gives the same intervals.
    again = write_significance(tmp_path / "cmp2", {"pinclip": [tmp_path / "pinclip"],
                                                   "clip_only": [tmp_path / "clip_only"]}, resamples=300, seed=1)
    assert again == out


def test_per_query_file_round_trip(tmp_path):
    f = save_per_query(tmp_path / "pq.npz", {"board_recall@10": ([5, 1, 3], [1.0, 0.0, 1.0]),
                                              "t2i_recall@10": (np.arange(4), np.zeros(4))})
    got = load_per_query(f)
    assert got["board_recall@10"][0].tolist() == [1, 3, 5] and got["board_recall@10"][1].tolist() == [0.0, 1.0, 1.0]
    assert set(load_per_query(tmp_path / "pq.npz")) == {"board_recall@10", "t2i_recall@10"}
    with pytest.raises(ValueError, match="twice"):
        save_per_query(tmp_path / "bad.npz", {"m": ([1, 1], [0.0, 1.0])})
