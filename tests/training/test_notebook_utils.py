"""training.notebook_utils: the helpers behind notebooks/ (world reuse, graph views, pictures,
sampler comparisons, training callbacks, evaluation views)."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg", force=True)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from graph import PinBoardGraph  # noqa: E402
from training import notebook_utils as nu  # noqa: E402


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return nu.synthetic_world(tmp_path_factory.mktemp("nbu"), num_pins=120, num_boards=12, seed=3,
                              image_size=16, workers=1, progress=False)


@pytest.fixture
def small_graph():
    # boards: 0 = {0, 1, 2}, 1 = {2, 3}, 2 = {4}; pin 5 has no board
    return PinBoardGraph.from_edges([0, 1, 2, 2, 3, 4], [0, 0, 0, 1, 1, 2], num_pins=6, num_boards=3)


def test_synthetic_world_is_built_once_and_keyed_by_parameters(world, tmp_path):
    d = world.dataset_dir.parent.parent
    stamp = (world.dataset_dir / "synth.json").stat().st_mtime_ns
    again = nu.synthetic_world(d, num_pins=120, num_boards=12, seed=3, image_size=16, workers=1, progress=False)
    assert (again.dataset_dir / "synth.json").stat().st_mtime_ns == stamp
    assert again.graph.num_edges == world.graph.num_edges
    other = nu.synthetic_world(d, num_pins=120, num_boards=12, seed=4, image_size=16, workers=1, progress=False)
    assert other.dataset_dir != world.dataset_dir
    assert world.graph.splits is not None and world.graph.features is not None
    assert world.truth.pin_topic.shape == (120,)


def test_degree_counts():
    values, counts = nu.degree_counts(torch.tensor([0, 1, 1, 3, 3, 3, 7]))
    assert values.tolist() == [1, 3, 7] and counts.tolist() == [2, 3, 1]
    assert values.dtype == np.int64
    v, c = nu.degree_counts(np.zeros(4, np.int64))
    assert v.size == 0 and c.size == 0


def test_split_summary_is_consistent(world):
    g = world.graph
    s = nu.split_summary(g)
    assert s["train"] + s["val"] + s["test"] + s["cold_start"] == g.num_edges
    assert s["cold_start_pins"] == len(g.splits.cold_start_pins) > 0
    # every warm pin with an edge keeps a training edge
    assert s["warm_pins"] == g.num_pins - s["cold_start_pins"] - s["isolated_pins"]
    with pytest.raises(ValueError, match="no splits"):
        nu.split_summary(PinBoardGraph.from_edges([0], [0]))


def test_board_mates_overlap_and_marks(small_graph):
    g = small_graph
    assert nu.board_mate_sets(g, [2, 4, 5]) == [{0, 1, 3}, set(), set()]
    seeds = torch.tensor([0, 2, 4])
    nb = torch.tensor([[1, 3, -1], [0, 4, 3], [0, -1, -1]])
    marks = nu.board_mate_marks(g, seeds, nb)
    assert marks.tolist() == [[True, False, False], [True, False, True], [False, False, False]]
    o = nu.board_mate_overlap(g, seeds, nb)
    # seed 0: 1 of 2 present neighbors, 1 / min(3, |{1,2}|=2); seed 2: 2 of 3, 2 / 3; seed 4: no mates
    assert o["num_seeds"] == 2
    assert o["precision"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert o["recall"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert o["coverage"] == pytest.approx((2 / 3 + 1 + 1 / 3) / 3)
    groups = np.array([0, 0, 1, 1, 0, 0])
    assert nu.board_mate_overlap(g, seeds, nb, groups)["group_precision"] == pytest.approx((1 / 2 + 1 / 3) / 2)


def test_sample_neighborhoods_every_kind(world):
    from sampling import PinSageSampler, build_sampler, load_sampler_config
    g = world.graph
    seeds = torch.tensor([int(p) for p in range(g.num_pins) if g.pin_degrees()[p] > 0][:8])
    for preset in ("pinsage_default", "pixie_restart", "random_walk_default"):
        s = build_sampler(load_sampler_config(preset), g)
        nb = nu.sample_neighborhoods(s, seeds, num_neighbors=5, walks_per_seed=30,
                                     generator=torch.Generator().manual_seed(0))
        assert nb.neighbors.shape == (8, 5) and nb.neighbors.dtype == torch.int64   # the preset's T overridden
        assert not bool((nb.neighbors == seeds[:, None]).any()), preset
        w = nb.weights
        assert bool((w[:, :-1] >= w[:, 1:]).all()), f"{preset}: not sorted by visits"
        assert bool(((nb.neighbors >= 0) == (w > 0)).all())
    # PinSage: exactly the sampler's own answer for the same generator
    s = PinSageSampler(g, num_random_walks=50, num_neighbors=5)
    a = nu.sample_neighborhoods(s, seeds, 5, generator=torch.Generator().manual_seed(1))
    b = s.sample(seeds, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.neighbors, b.neighbors)
    with pytest.raises(TypeError, match="unsupported sampler"):
        nu.sample_neighborhoods(object(), seeds)


def test_random_walk_neighborhoods_count_visits():
    # a path pin 0 - board 0 - pin 1 - board 1 - pin 2: 2-hop walks from 0 reach 1 then 0 or 2
    g = PinBoardGraph.from_edges([0, 1, 1, 2], [0, 0, 1, 1], num_pins=3, num_boards=2)
    from sampling import build_sampler, load_sampler_config
    rw = build_sampler(load_sampler_config("random_walk_default", {"random_walk.num_hops": 2,
                                                                    "exclude_splits": []}), g)
    nb = nu.sample_neighborhoods(rw, torch.tensor([0]), num_neighbors=3, walks_per_seed=100,
                                 generator=torch.Generator().manual_seed(0))
    # every walk visits pin 1 at hop 1 (the seed excluded, 2 is reachable only at hop 2)
    assert nb.neighbors[0, 0] == 1 and nb.weights[0, 0] >= 100
    assert nb.total_visits[0] == 200                              # 2 visits per walk, the seed's included
    assert set(nb.neighbors[0].tolist()) <= {1, 2, -1}
    assert nb.weights[0].sum() < 200                              # some hop-2 visits went back to the seed
    again = nu.sample_neighborhoods(rw, torch.tensor([0]), num_neighbors=3, walks_per_seed=100,
                                    generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.weights, nb.weights)                 # deterministic for a generator


def test_visit_frequency_by_rank():
    from sampling import ImportanceNeighbors
    nb = ImportanceNeighbors(torch.tensor([0, 1, 2]), torch.tensor([[1, 2], [0, -1], [-1, -1]]),
                             torch.tensor([[6.0, 2.0], [5.0, 0.0], [0.0, 0.0]]), torch.tensor([10, 10, 0]))
    np.testing.assert_allclose(nu.visit_frequency_by_rank(nb), [(0.6 + 0.5) / 2, 0.1])


def test_measure_throughput_counts_calls():
    calls = []
    r = nu.measure_throughput(lambda b: calls.append(b.numel()), torch.arange(10), batch_size=4, repeats=2,
                              warmup=1)
    assert calls == [4, 4, 2] * 3
    assert r["batches"] == 3 and r["seeds_per_s"] > 0 and r["seconds_per_batch"] == pytest.approx(r["best_s"] / 3)
    with pytest.raises(ValueError):
        nu.measure_throughput(lambda b: None, torch.arange(0))


def test_overlap_sweep_grid_and_plot(world):
    g = world.graph
    seeds = torch.tensor([int(p) for p in range(g.num_pins) if g.pin_degrees()[p] > 0][:10])
    rows = nu.overlap_sweep(g, seeds, [0.0, 0.5], [5, 50], num_neighbors=5, progress=False)
    assert [(r["restart_prob"], r["num_walks"]) for r in rows] == [(0.0, 5), (0.0, 50), (0.5, 5), (0.5, 50)]
    for r in rows:
        assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1
    fig = nu.plot_overlap_sweep(rows, "recall")
    assert fig.axes[0].images[0].get_array().shape == (2, 2)


def test_pictures(world):
    import matplotlib.pyplot as plt
    plt.close("all")
    g = world.graph
    imgs = nu.load_pin_images(g.features, torch.tensor([0, -1, 5]))
    assert imgs[0].shape == (16, 16, 3) and imgs[0].dtype == np.uint8 and imgs[1] is None
    fig = nu.plot_pin_grid(g.features, [0, 1, 2, 3, 4, -1, 6], ncols=3)
    assert len(fig.axes) == 9                                    # 3 x 3, two unused cells hidden
    assert "pin 0" in fig.axes[0].get_title()
    plt.close(fig)
    fig = nu.plot_neighbor_gallery(g.features, [0, 1], {"a": torch.tensor([[1, 2], [0, -1]]),
                                                        "b": torch.tensor([[3, 4], [5, 6]])},
                                   num_show=3, marks={"a": torch.tensor([[True, False], [False, False]])})
    assert len(fig.axes) == 4 * 4                                 # 2 queries x 2 methods, query + 3
    assert fig.axes[1].spines["left"].get_edgecolor()[:3] == matplotlib.colors.to_rgb("tab:green")
    plt.close(fig)
    for fig in (nu.plot_degree_distributions(g), nu.plot_split_summary(g),
                nu.plot_bars({"a": 1.0, "b": float("nan")}), nu.plot_embedding_map(torch.randn(g.num_pins, 8),
                                                                                  nu.pin_labels(g))):
        assert fig.axes
        nu.show(fig)                                              # outside IPython: closed, no error
    assert plt.get_fignums() == []


def test_pick_pins_and_hidden_groups(world):
    g = world.graph
    cold = g.splits.is_cold_start(g.num_pins)
    a = nu.pick_pins(g, 9, seed=1, min_degree=2, cold_share=1 / 3)
    assert a.dtype == torch.int64 and a.numel() == 9 and torch.equal(a, torch.sort(a).values)
    assert int(cold[a].sum()) == 3
    assert bool((g.pin_degrees()[a[~cold[a]]] >= 2).all())
    assert torch.equal(a, nu.pick_pins(g, 9, seed=1, min_degree=2, cold_share=1 / 3))
    assert nu.pick_pins(g, 10**6).numel() == int((~cold & (g.pin_degrees() > 0)).sum())
    groups = nu.hidden_groups(world.truth)
    np.testing.assert_array_equal(groups % 12, world.truth.pin_topic)
    np.testing.assert_array_equal(groups // 12, world.truth.pin_style)


def test_pick_board_and_pin_labels(world):
    g = world.graph
    b = nu.pick_board(g, min_size=3, seed=0)
    assert g.board_degrees()[b] >= 3
    assert nu.pick_board(g, min_size=10**6) == int(g.board_degrees().argmax())
    labels = nu.pin_labels(g)
    sizes = g.board_degrees()
    for p in range(0, g.num_pins, 7):
        boards = g.boards_of(p)
        assert labels["board"][p] in boards.tolist()
        assert sizes[labels["board"][p]] == sizes[boards.long()].max()
    np.testing.assert_array_equal(labels["topic"], world.truth.pin_topic)
    np.testing.assert_array_equal(labels["style"], world.truth.pin_style)


def test_tables_and_curves():
    t = nu.format_table({"a": {"x": 0.5, "y": None}, "b": {"x": float("nan"), "z": 3}})
    lines = t.splitlines()
    assert lines[0].split() == ["x", "y", "z"] and lines[1].split() == ["a", "0.500", "-", "-"]
    assert lines[2].split() == ["b", "nan", "-", "3"]
    ev = {"metrics": {"board_recall@1": 0.1, "board_recall@10": 0.5, "cold_start_board_recall@10": 0.3,
                      "board_recall@5": None, "board_mrr": 0.2}}
    assert nu.recall_curves({"m": ev}) == {"m": {1: 0.1, 10: 0.5}}
    assert nu.recall_curves({"m": ev}, "cold_start_board_") == {"m": {10: 0.3}}


def test_live_loss_plot_records_outside_ipython():
    live = nu.LiveLossPlot(every=2)
    for step in (1, 2, 3):
        live(step, {"loss": 3.0 - step, "clip_loss": 1.0, "grad_norm": 5.0, "lr": 0.1})
    assert live.history["loss"] == [(1, 2.0), (2, 1.0), (3, 0.0)]
    assert set(live.history) == {"loss", "clip_loss"}
    assert len(live.figure().axes[0].lines) == 2


def test_train_run_calls_back_every_step_and_reuses_finished_runs(world, tmp_path):
    from training.config import load_train_config
    tiny = {"embed_dim": 16, "matryoshka_dims": [8, 16],
            "vision": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "heads": 2},
            "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2, "freeze": "frozen"},
            "fusion": {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2, "patch_layers": [1],
                       "patch_pool": 1}}
    ov = nu.demo_overrides(world.graph_dir, tmp_path / "cache", max_steps=3, batch_size=8, num_workers=0,
                           model_overrides=tiny, extra=["train.progress=false", "eval.at_end=false"])
    cfg = load_train_config("demo", ov)
    assert cfg.train.max_steps == 3 and cfg.model.overrides.vision.layers == 1 and cfg.data.graph
    assert nu.run_dir_name("demo", ov) != nu.run_dir_name("demo", ov[:-1])
    assert nu.run_dir_name("demo", ov) == nu.run_dir_name("demo", list(reversed(ov)))
    seen = []
    run = tmp_path / "run"
    summary = nu.train_run("demo", run, ov, callbacks=[lambda step, terms: seen.append((step, sorted(terms)))])
    assert [s for s, _ in seen] == [1, 2, 3] and summary["steps"] == 3
    assert {"loss", "clip_loss", "grad_norm", "lr"} <= set(seen[0][1])
    losses = nu.read_losses(run)
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert losses["step"].tolist() == [r["step"] for r in lines]
    np.testing.assert_allclose(losses["loss"], [r["loss"] for r in lines])
    again = []
    assert nu.train_run("demo", run, ov, callbacks=[lambda *a: again.append(a)])["steps"] == 3
    assert again == []                                            # reused: nothing trained
    fig = nu.plot_loss_curves({"r": run}, keys=("loss", "clip_loss"))
    assert len(fig.axes[0].lines) == 2
