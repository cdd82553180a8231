"""Fixtures for the trainer tests: a tiny synthetic world and a tiny training config.

The model is pinclip-tiny-demo shrunk to width 32, 2 ViT layers, 32 px images and a frozen
scratch text tower (its features go through the text cache like MiniLM's): a step takes tens of
milliseconds on a CPU.
"""
from __future__ import annotations

import copy
import os

import pytest

TINY_MODEL = {
    "embed_dim": 16,
    "matryoshka_dims": [8, 16],
    "vision": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2, "freeze": "frozen"},
    "fusion": {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2, "patch_layers": [1, 2],
               "patch_pool": 1},
}


def tiny_train_config(dataset, cache_dir, **sections) -> dict:
    """A training config dict for the tiny world; ``sections`` update the sections key by key."""
    cfg = {
        "data": {"dataset": str(dataset), "cache_dir": str(cache_dir), "num_workers": 0},
        "sampler": {"pinsage": {"num_random_walks": 20, "num_neighbors": 5},
                    "pairs": {"num_positives": 2, "num_negatives": 8}},
        "model": {"name": "pinclip-tiny-demo", "overrides": copy.deepcopy(TINY_MODEL)},
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "train": {"max_steps": 6, "batch_size": 16, "log_every": 1, "checkpoint_every": 3, "progress": False,
                  "tensorboard": False},
        "eval": {"at_end": False},
    }
    for name, values in sections.items():
        cfg[name] = {**cfg.get(name, {}), **values}
    return cfg


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory):
    """160 pins (16 fresh), 16 boards, 32 px images."""
    from graph.synth import synthesize
    out = tmp_path_factory.mktemp("world") / "world"
    synthesize(out, num_pins=160, num_boards=16, seed=0, image_size=32, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def text_cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def make_config(tiny_world, text_cache_dir):
    """make_config(**sections) -> a training config dict on the tiny world."""
    def make(**sections):
        return tiny_train_config(tiny_world, text_cache_dir, **sections)
    return make


@pytest.fixture
def cli_env():
    """Environment for `pinclip` subprocesses: offline, one thread (reproducible, cheap)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def one_faiss_thread():
    """One faiss OpenMP thread for a module (``pytestmark = pytest.mark.usefixtures(...)``): on a
    shared 2-core machine faiss's spinning threads collapse under load."""
    from training.faiss_probe import require_faiss
    faiss = require_faiss()
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


# The demo's model and loader shrunk through --set (the shipped demo config is minutes of CPU),
# for the demo and compare tests.
TINY_DEMO_OVERRIDES = ["model.overrides.embed_dim=16", "model.overrides.matryoshka_dims=[8,16]",
        "model.overrides.vision.width=32", "model.overrides.vision.layers=2", "model.overrides.vision.heads=2",
        "model.overrides.vision.image_size=32", "model.overrides.vision.patch_size=8",
        "model.overrides.text.type=scratch", "model.overrides.text.context_length=12",
        "model.overrides.text.width=32", "model.overrides.text.layers=1", "model.overrides.text.heads=2",
        "model.overrides.text.freeze=frozen", "model.overrides.fusion.width=32", "model.overrides.fusion.layers=1",
        "model.overrides.fusion.heads=2", "model.overrides.fusion.num_queries=2",
        "model.overrides.fusion.region_grid=2", "model.overrides.fusion.patch_layers=[1,2]",
        "model.overrides.fusion.patch_pool=1", "data.num_workers=0", "train.batch_size=16",
        "sampler.pinsage.num_random_walks=20", "eval.at_end=false", "train.progress=false"]
