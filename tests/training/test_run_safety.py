"""Nothing lost, nothing trusted: runs that cannot go wrong silently.

Parameters that become NaN/inf stop training at that step; a failed start leaves no run
directory; one trainer per run directory (an OS lock); evaluation refuses NaN embeddings and a
graph store that changed since the run or baseline was made; a checkpoint holding pickled
objects is refused without torch's advice to load it unsafely.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from graph.locks import LockedError, lock_path
from training.checkpoint import (CheckpointError, GraphChangedError, list_checkpoints, load_checkpoint,
                                 save_checkpoint)
from training.config import TrainConfigError, load_train_config
from training.logging_utils import read_jsonl
from training.trainer import Trainer, TrainingError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hold_lock():
    """hold_lock(target) -> the Popen of another process holding ``target``'s write lock."""
    procs = []

    def hold(target: Path) -> subprocess.Popen:
        code = ("import sys, time\n"
                "from graph.locks import exclusive_lock\n"
                "with exclusive_lock(sys.argv[1], 'training run'):\n"
                "    print('ready', flush=True)\n"
                "    time.sleep(120)\n")
        proc = subprocess.Popen([sys.executable, "-c", code, str(target)], stdout=subprocess.PIPE, text=True,
                                cwd=REPO)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def _write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


# ------------------------------------------------------------------------------ training
def test_parameters_that_become_nonfinite_stop_the_run_at_that_step(make_config, tmp_path):
    # AdamW normalizes its update, so only an extreme step overflows the weights in one go.
    run = tmp_path / "run"
    cfg = make_config(optim={"lr": 1e36, "weight_decay": 1000.0, "warmup_steps": 0},
                      train={"max_steps": 4, "checkpoint_every": 1})
    with pytest.raises(TrainingError, match=r"stopped at step 1: parameter '[\w.]+'.* became NaN or infinite") as err:
        Trainer(load_train_config(cfg), run).train()
    assert "not checkpointed" in str(err.value) and "optim.lr" in str(err.value)
    assert list_checkpoints(run) == []                    # the NaN weights were never saved
    events = [e for e in read_jsonl(run / "events.jsonl") if e["event"] == "nonfinite_parameters"]
    assert [e["step"] for e in events] == [1]
    assert not lock_path(run).exists()                    # the failed run released its lock

    # An lr past float32 fails inside AdamW itself: the same error kind, naming the step.
    cfg["optim"]["lr"], cfg["optim"]["weight_decay"] = 1e38, 0.05
    with pytest.raises(TrainingError, match=r"stopped at step 1: the optimizer step overflowed float32"):
        Trainer(load_train_config(cfg), tmp_path / "run2").train()


def test_failed_start_leaves_no_run_directory_and_the_fix_works_on_the_same_out(make_config, tmp_path, capsys):
    from training.cli import main
    run = tmp_path / "runs" / "demo"
    config = _write_config(tmp_path / "cfg.yaml", make_config(train={"max_steps": 1, "checkpoint_every": 1}))
    # 144 train pins, so no batch of 1000: found after the graph store was built into RUN_DIR/graph.
    assert main(["train", "--config", str(config), "--out", str(run), "train.batch_size=1000"]) == 2
    err = capsys.readouterr().err
    assert "key 'train.batch_size' = 1000: larger than the 144 train pins" in err
    assert not run.exists()                               # no config.yaml, train.log or graph left behind
    assert main(["train", "--config", str(config), "--out", str(run)]) == 0
    assert (run / "config.yaml").is_file() and (run / "graph_identity.json").is_file()
    assert "no full batch" not in (run / "train.log").read_text()

    # A directory that existed before (empty) stays, emptied of what the failed start built.
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(TrainConfigError, match="train.batch_size"):
        Trainer(load_train_config(make_config(train={"batch_size": 1000})), empty)
    assert empty.is_dir() and list(empty.iterdir()) == []
    # A refused start never touches an existing run.
    with pytest.raises(Exception, match="already holds a training run"):
        Trainer(load_train_config(make_config(train={"batch_size": 1000})), run)
    assert (run / "config.yaml").is_file() and list_checkpoints(run)


def test_a_second_trainer_on_a_run_directory_in_use_is_refused(make_config, tmp_path, hold_lock, capsys):
    from training.cli import main
    run = tmp_path / "run"
    cfg = make_config(train={"max_steps": 1, "checkpoint_every": 1})
    holder = hold_lock(run)
    with pytest.raises(LockedError, match=rf"training run is being written by process {holder.pid}"):
        Trainer(load_train_config(cfg), run)
    assert not run.exists()
    config = _write_config(tmp_path / "cfg.yaml", cfg)
    assert main(["train", "--config", str(config), "--out", str(run)]) == 2
    assert f"process {holder.pid}" in capsys.readouterr().err
    holder.kill()
    holder.wait()
    Trainer(load_train_config(cfg), run).train()
    assert not lock_path(run).exists()                    # released when train() returned
    holder = hold_lock(run)
    with pytest.raises(LockedError, match=str(holder.pid)):
        Trainer(None, run, resume=True, overrides=["train.max_steps=2"])


def test_checkpoint_with_a_pickled_object_is_refused_without_unsafe_advice(tmp_path):
    rec = save_checkpoint(tmp_path, 1, {"step": 1, "payload": _Payload()})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(rec)
    msg = str(err.value)
    assert msg.startswith(str(tmp_path / "checkpoints" / "step_00000001.pt"))
    assert "refused for safety" in msg and "_Payload" in msg
    assert "weights_only" not in msg


class _Payload:
    """A class instance: what a weights_only load refuses."""


# ------------------------------------------------------------------------------ evaluation
@pytest.fixture
def small_store(tmp_path):
    """(dataset dir, graph store path) of a 200-pin world without images."""
    from graph.dataset import build_graph_from_dataset
    from graph.synth import synthesize
    synthesize(tmp_path / "world", 200, 20, seed=1, images=False, progress=False)
    build_graph_from_dataset(tmp_path / "world", tmp_path / "graph", seed=0, progress=False)
    return tmp_path / "world", tmp_path / "graph"


def test_nonfinite_embeddings_are_not_scored(small_store, tmp_path):
    from graph import PinBoardGraph
    from training.cli import main
    from training.evaluation.run_eval import EvaluationError, evaluate_dir, save_baseline
    _, store = small_store
    g = PinBoardGraph.open(store)
    good = torch.nn.functional.normalize(torch.randn(g.num_pins, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    save_baseline(tmp_path / "nan", "nan", store, {"fused": torch.full((g.num_pins, 8), float("nan"))})
    with pytest.raises(EvaluationError, match=rf"nan: method 'nan': {g.num_pins} of {g.num_pins} rows of the 'fused' "
                                              r"embedding are not finite"):
        evaluate_dir(tmp_path / "nan")
    assert not (tmp_path / "nan" / "evaluation.json").exists()
    assert main(["evaluate", str(tmp_path / "nan"), "--quiet"]) == 2
    one = good.clone()
    one[5, 2] = float("inf")
    save_baseline(tmp_path / "one", "one", store, {"image": good, "text": one})
    with pytest.raises(EvaluationError, match="1 of .* rows of the 'text' embedding .* first: pin 5"):
        evaluate_dir(tmp_path / "one")
    # Rows of pins the method does not support are not scored, whatever they hold.
    sup = torch.ones(g.num_pins, dtype=torch.bool)
    sup[5] = False
    save_baseline(tmp_path / "partial", "partial", store, {"graph": one}, supported=sup)
    assert evaluate_dir(tmp_path / "partial")["counts"]["supported_pins"] == g.num_pins - 1


def test_baseline_refuses_a_changed_graph_store(small_store, tmp_path, capsys):
    from graph import PinBoardGraph
    from graph.dataset import build_graph_from_dataset
    from training.cli import main
    from training.evaluation.run_eval import evaluate_dir, save_baseline
    world, store = small_store
    g = PinBoardGraph.open(store)
    emb = torch.nn.functional.normalize(torch.randn(g.num_pins, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    base = save_baseline(tmp_path / "base", "base", store, {"fused": emb})
    recorded = json.loads((base / "method.json").read_text())["graph_identity"]
    assert recorded["split_params"]["seed"] == 0
    before = evaluate_dir(base)
    assert "graph_changed" not in before
    build_graph_from_dataset(world, store, seed=5, progress=False)      # same data, another split
    with pytest.raises(GraphChangedError) as err:
        evaluate_dir(base)
    msg = str(err.value)
    assert recorded["manifest_sha256"][:16] in msg and "split params: seed 0 recorded, 5 now" in msg
    assert "--allow-changed-graph" in msg
    assert main(["evaluate", str(base), "--quiet"]) == 2
    assert main(["report", str(base), "--out", str(tmp_path / "rep"), "--quiet"]) == 2
    assert not (tmp_path / "rep").exists()
    capsys.readouterr()
    assert main(["evaluate", str(base), "--quiet", "--json", "--allow-changed-graph"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["graph_changed"]["recorded"]["split_params"]["seed"] == 0
    assert ev["graph_changed"]["current"]["split_params"]["seed"] == 5
    assert json.loads((base / "evaluation.json").read_text())["graph_changed"] == ev["graph_changed"]
    assert main(["report", str(base), "--out", str(tmp_path / "rep"), "--quiet", "--allow-changed-graph"]) == 0


def test_run_refuses_a_changed_graph_store_in_evaluate_embed_and_resume(make_config, tiny_world, tmp_path, capsys):
    from graph.dataset import build_graph_from_dataset
    from training.cli import main
    from training.embed import embed_run
    from training.evaluation.run_eval import EvaluationError, evaluate_dir
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 2, "checkpoint_every": 2})), run).train()
    identity = json.loads((run / "graph_identity.json").read_text())
    assert identity["graph"] == str((run / "graph").absolute()) and identity["split_params"]["seed"] == 0
    first = evaluate_dir(run, progress=False, log=lambda *_: None)
    assert first["graph_manifest_sha256"] == identity["manifest_sha256"] and "graph_changed" not in first

    build_graph_from_dataset(tiny_world, run / "graph", seed=7, progress=False)   # the split moves
    with pytest.raises(GraphChangedError, match=r"manifest sha256 .* recorded, .* now; split params: seed 0 recorded, "
                                                r"7 now"):
        evaluate_dir(run, progress=False, log=lambda *_: None)
    with pytest.raises(GraphChangedError, match="--allow-changed-graph"):
        embed_run(run, tmp_path / "emb", progress=False, log=lambda *_: None)
    assert not (tmp_path / "emb").exists()
    with pytest.raises(GraphChangedError, match=r"--resume .*restore the store it trained on"):
        Trainer(None, run, resume=True, overrides=["train.max_steps=4"])
    assert not lock_path(run).exists() and [s for s, _ in list_checkpoints(run)] == [2]
    assert main(["embed", str(run), "--out", str(tmp_path / "emb"), "--quiet"]) == 2
    assert main(["evaluate", str(run), "--quiet"]) == 2
    capsys.readouterr()

    # Explicitly allowed: embedded again on the new store, the change recorded.
    assert main(["evaluate", str(run), "--quiet", "--json", "--allow-changed-graph"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["graph_changed"]["recorded"]["manifest_sha256"] == identity["manifest_sha256"]
    assert ev["graph_changed"]["current"]["split_params"]["seed"] == 7
    manifest = json.loads((run / "embeddings" / "manifest.json").read_text())
    assert manifest["graph_manifest_sha256"] == ev["graph_changed"]["current"]["manifest_sha256"]
    assert manifest["graph_changed"] == ev["graph_changed"]

    # A run made before runs recorded their store is accepted, with a note.
    (run / "graph_identity.json").unlink()
    notes = []
    evaluate_dir(run, progress=False, log=notes.append)
    assert any("no record of the graph store" in n for n in notes)

    # Embeddings that went NaN are refused, however they came about.
    fused = np.load(run / "embeddings" / "fused.npy")
    fused[:] = np.nan
    np.save(run / "embeddings" / "fused.npy", fused)
    with pytest.raises(EvaluationError, match=r"run: method 'run': .* rows of the 'fused' embedding are not finite"):
        evaluate_dir(run, progress=False, log=lambda *_: None)


def test_embed_into_the_run_directory_is_refused_before_any_work(make_config, tmp_path, capsys, monkeypatch,
                                                                 hold_lock):
    from training import embed as embed_module
    from training.cli import main
    run = tmp_path / "run"
    Trainer(load_train_config(make_config(train={"max_steps": 2, "checkpoint_every": 2})), run).train()
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    def no_model(*_a, **_k):
        raise AssertionError("embed loaded the model before checking --out")
    monkeypatch.setattr(embed_module, "load_run", no_model)
    for out in (run, run / "checkpoints"):
        assert main(["embed", str(run), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{out}: exists and holds" in err and "not exported embeddings" in err and "refusing" in err, err
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before
    assert [s for s, _ in list_checkpoints(run)] == [2]
    monkeypatch.undo()

    # Evaluate embeds into RUN_DIR/embeddings: not while another process writes the run.
    holder = hold_lock(run)
    assert main(["evaluate", str(run), "--quiet"]) == 2
    assert f"training run is being written by process {holder.pid}" in capsys.readouterr().err
    assert not (run / "embeddings").exists()
    holder.kill()
    holder.wait()
    assert main(["evaluate", str(run), "--quiet", "--json"]) == 0
    assert (run / "embeddings" / "manifest.json").is_file() and not lock_path(run).exists()


def test_a_second_build_graph_into_an_out_in_use_is_refused_before_reading(tiny_world, tmp_path, hold_lock, capsys):
    from training.cli import main
    out = tmp_path / "store"
    holder = hold_lock(out)
    assert main(["build-graph", str(tiny_world), "--out", str(out), "--check-images", "--quiet"]) == 2
    captured = capsys.readouterr()
    assert f"process {holder.pid}" in captured.err and "checked" not in captured.out   # refused before the check
    assert not out.exists()
    holder.kill()
    holder.wait()
    assert main(["build-graph", str(tiny_world), "--out", str(out), "--quiet"]) == 0
    assert (out / "manifest.json").is_file() and not lock_path(out).exists()
