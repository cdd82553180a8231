"""The researcher notebooks (notebooks/*.ipynb) run end to end, and are committed without outputs.

Each notebook is executed with nbclient in a kernel of this interpreter (``python3`` kernel spec:
jupyter_client runs its ``python`` as ``sys.executable``; the first injected cell checks it) with
small parameters injected after its ``parameters`` cell (papermill-style), into a temporary work
directory shared by the four (so 04 reuses the world and the runs of 01-03, as a researcher's
session would). A notebook that raises fails its test. Outputs are never written back.
"""
from __future__ import annotations

import ast
import copy
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb"))
EXPECTED = ["01_explore_graph.ipynb", "02_sampler_configs.ipynb", "03_train_pinclip.ipynb",
            "04_neighborhood_quality.ipynb", "05_model_in_use.ipynb"]

# pinclip-tiny-demo shrunk as in tests/training/conftest.py: a step takes tens of milliseconds.
TINY_MODEL = {
    "embed_dim": 16,
    "matryoshka_dims": [8, 16],
    "vision": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2, "freeze": "frozen"},
    "fusion": {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2, "patch_layers": [1, 2],
               "patch_pool": 1},
}
WORLD = {"num_pins": 400, "num_boards": 40, "seed": 0, "image_size": 32}
TRAIN = {"max_steps": 3, "batch_size": 16, "num_workers": 0, "model_overrides": TINY_MODEL}
SMALL = {
    "01_explore_graph.ipynb": {**WORLD, "num_show": 6},
    "02_sampler_configs.ipynb": {**WORLD, "num_gallery": 2, "num_eval_seeds": 40, "restart_probs": [0.0, 0.6],
                                 "walk_counts": [10, 40], "sweep_neighbors": 15},
    "03_train_pinclip.ipynb": {**WORLD, **TRAIN},
    "04_neighborhood_quality.ipynb": {**WORLD, **TRAIN, "num_gallery": 2, "max_points": 300},
    "05_model_in_use.ipynb": {**WORLD, **TRAIN, "num_fresh": 40, "k": 4},
}

# degrees, board grid, split, cold grid | gallery, visit frequencies, throughput, 2 sweeps |
# 2 live loss plots, loss curves, bars | 2 recall curves, bars, gallery, 2 maps |
# text and image search of the run's pins, text and image search of the fresh pins
MIN_FIGURES = {"01_explore_graph.ipynb": 4, "02_sampler_configs.ipynb": 5, "03_train_pinclip.ipynb": 4,
               "04_neighborhood_quality.ipynb": 6, "05_model_in_use.ipynb": 4}


def _parameters_cell(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"expected exactly one cell tagged 'parameters', found {len(tagged)}"
    return tagged[0]


def _parameter_names(source: str) -> set[str]:
    return {t.id for node in ast.parse(source).body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def test_the_five_notebooks_exist():
    assert NOTEBOOKS == EXPECTED


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_without_outputs_with_parameters_first(name):
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{name}: cell {i} has outputs (strip them before committing)"
            assert cell.execution_count is None, f"{name}: cell {i} has an execution count"
    first_code = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
    assert _parameters_cell(nb) == first_code, f"{name}: the parameters cell must be the first code cell"
    names = _parameter_names(nb.cells[first_code].source)
    assert {"work_dir", "seed"} <= names
    assert set(SMALL[name]) <= names, f"{name}: the test injects parameters the notebook lacks"


@pytest.fixture(scope="module")
def shared_work_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("notebooks")


def _inject(nb, params: dict) -> None:
    i = _parameters_cell(nb)
    lines = [f"{k} = {v!r}" for k, v in params.items()]
    cell = nbformat.v4.new_code_cell("# injected by tests/notebooks/test_notebooks.py\n" + "\n".join(lines))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(i + 1, cell)
    check = nbformat.v4.new_code_cell(f"import sys\nassert sys.prefix == {sys.prefix!r}, sys.executable")
    nb.cells.insert(0, check)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, shared_work_dir, monkeypatch):
    # The kernel inherits this environment: no display, offline, small thread pools.
    for key, value in {"MPLBACKEND": "Agg", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                       "PINCLIP_CACHE_DIR": str(shared_work_dir / "cache")}.items():
        monkeypatch.setenv(key, value)
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    params = copy.deepcopy(SMALL[name])
    params["work_dir"] = str(shared_work_dir)
    _inject(nb, params)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=180, allow_errors=False,
                                     resources={"metadata": {"path": str(shared_work_dir)}})
    client.execute()
    # Every figure came out as a PNG (the live loss plots too, updated in place).
    pngs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]
    assert len(pngs) >= MIN_FIGURES[name], f"{name}: {len(pngs)} PNG outputs, expected {MIN_FIGURES[name]}"
    assert not any(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert not list(NOTEBOOK_DIR.glob("*.png")) and not (NOTEBOOK_DIR / "runs").exists()
