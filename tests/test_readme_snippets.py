"""Every ```python block of the READMEs runs as written.

How the blocks run (so a doc writer knows what a snippet may assume):

* The blocks of one Markdown file run in order in one namespace, as a reader pastes them into one
  session: a later block may use the names an earlier one defined (``g``, ``model``, ...).
* Each file runs in a fresh temporary working directory that holds what the prose says exists:
  ``world/`` (a synthetic dataset, ``graph.synth``), ``graph_dir/`` (its graph store with splits,
  ``graph.dataset``), ``MODEL_DIR/`` (a saved model, ``pinclip.save_pretrained``) and ``pin.jpg``.
* The namespace is pre-seeded with the placeholders the snippets leave to the reader
  (:func:`seeded_namespace`: ``torch``, ``pin_ids``/``board_ids``, ``seeds``, ``images``,
  ``captions``, ``pil_image``, ``neighbor_images``, ``neighbor_captions``, ``neighbor_weights``,
  ``fn_mask``); anything else a block uses it must import or define itself.
* Sizes shrink in one place: ``training.config.load_train_config`` gets :data:`SHRINK` appended to
  its overrides (a tiny model, a few steps, no worker processes), so a snippet's own
  ``train.max_steps=40`` stays as written and runs in seconds.
* A block preceded by ``<!-- not-run: reason -->`` is skipped; keep these rare and justified.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "sampling/README.md", "pinclip/README.md", "notebooks/README.md",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]

_BLOCK = re.compile(r"(?P<pre>[^\n]*)\n```python\n(?P<code>.*?)\n```", re.S)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*\S.*-->")

TINY_MODEL = {
    "embed_dim": 16, "matryoshka_dims": [8, 16],
    "vision": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 2, "heads": 2},
    "text": {"type": "scratch", "context_length": 12, "width": 32, "layers": 1, "heads": 2, "freeze": "frozen"},
    "fusion": {"width": 32, "layers": 1, "heads": 2, "num_queries": 2, "region_grid": 2, "patch_layers": [1, 2],
               "patch_pool": 1},
}


def _dotlist(prefix: str, d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _dotlist(f"{prefix}.{k}", v)
        else:
            out.append(f"{prefix}.{k}={v!r}".replace("'", '"'))
    return out


# Appended to every load_train_config call a snippet makes (later overrides win).
SHRINK = [
    "train.max_steps=3", "train.batch_size=16", "train.log_every=1", "train.checkpoint_every=3",
    "train.progress=false", "train.tensorboard=false", "data.num_workers=0",
    "sampler.pinsage.num_random_walks=20", "sampler.pinsage.num_neighbors=5", "sampler.pairs.num_negatives=8",
    "optim.warmup_steps=1", "eval.at_end=false", "model.name=pinclip-tiny-demo",
    *_dotlist("model.overrides", TINY_MODEL),
]


def python_blocks(path: Path) -> list[tuple[int, str, bool]]:
    """(line, code, run?) of every ```python block of ``path``."""
    text = "\n" + path.read_text()
    out = []
    for m in _BLOCK.finditer(text):
        line = text.count("\n", 0, m.start("code"))   # 1-based line of the first code line
        out.append((line, m.group("code"), not _NOT_RUN.search(m.group("pre"))))
    return out


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """The world, graph store, model directory and image every file's working directory gets."""
    from PIL import Image

    import pinclip
    from graph.dataset import build_graph_from_dataset
    from graph.synth import synthesize
    base = tmp_path_factory.mktemp("readme_assets")
    synthesize(base / "world", num_pins=160, num_boards=16, seed=0, image_size=32, workers=1, progress=False)
    build_graph_from_dataset(base / "world", base / "graph_dir", cold_start_fraction=0.1, progress=False)
    model = pinclip.create_model("pinclip-tiny-demo", **{**TINY_MODEL, "embed_dim": 64, "matryoshka_dims": [32, 64]})
    (base / "MODEL_DIR").mkdir()
    pinclip.save_pretrained(model, base / "MODEL_DIR")
    Image.new("RGB", (40, 30), (200, 60, 20)).save(base / "pin.jpg")
    return base


def seeded_namespace(image_size: int = 64) -> dict:
    """The placeholders snippets leave to the reader, at tiny scale (B=2 pins, K=2 neighbors)."""
    from PIL import Image
    gen = torch.Generator().manual_seed(0)
    b, k = 2, 2
    return {
        "__name__": "__readme__", "torch": torch,
        "pin_ids": torch.randint(0, 40, (200,), generator=gen),
        "board_ids": torch.randint(0, 8, (200,), generator=gen),
        "seeds": torch.arange(8),
        "images": torch.rand(b, 3, image_size, image_size, generator=gen),
        "captions": ["a red chair", "a garden path"],
        "pil_image": Image.new("RGB", (48, 48), (20, 120, 60)),
        "neighbor_images": torch.rand(b * k, 3, image_size, image_size, generator=gen),
        "neighbor_captions": ["a blue chair", "a wooden chair", "a stone path", "tulips"],
        "neighbor_weights": torch.tensor([[3.0, 1.0], [2.0, 0.0]]),
        "fn_mask": torch.eye(b, dtype=torch.bool).repeat_interleave(k, dim=1),
    }


def _docs_with_blocks() -> list[str]:
    return [d for d in DOCS if (ROOT / d).exists() and python_blocks(ROOT / d)]


def test_every_doc_with_python_blocks_is_covered():
    dirs = ["", "graph", "sampling", "training", "pinclip", "configkit", "notebooks", "benchmarks", "docs"]
    found = {str(p.relative_to(ROOT)) for d in dirs for p in (ROOT / d).glob("*.md")
             if "```python" in p.read_text(errors="replace")}
    assert found <= set(DOCS), f"add these to DOCS: {sorted(found - set(DOCS))}"


@pytest.mark.parametrize("doc", _docs_with_blocks())
def test_python_blocks_run(doc, assets, tmp_path, monkeypatch):
    import shutil

    import training.config
    for name in ("world", "graph_dir", "MODEL_DIR", "pin.jpg"):
        src = assets / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PINCLIP_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(var, "1")
    original = training.config.load_train_config

    def shrunk(source=None, overrides=None, **kw):
        return original(source, [*(overrides or ()), *SHRINK], **kw)
    # Why every module: one that does `from training.config import load_train_config` holds its
    # own name for it. Import them first (a module first imported while the patch is on would
    # keep the shrunk function after the test and shrink every later test's runs), then patch
    # each name; monkeypatch puts them all back.
    import training.embed, training.evaluation.run_eval, training.neighbors, training.search  # noqa: E401,F401
    import training.notebook_utils.runs, training.trainer  # noqa: E401,F401
    for module in [m for m in list(sys.modules.values()) if m is not None]:
        if getattr(module, "load_train_config", None) is original:
            monkeypatch.setattr(module, "load_train_config", shrunk)

    ns = seeded_namespace()
    ran = 0
    for line, code, run in python_blocks(ROOT / doc):
        if not run:
            continue
        try:
            exec(compile(code, f"{doc}:{line}", "exec"), ns)
        except Exception as exc:
            raise AssertionError(f"the python block at {doc}:{line} fails: {type(exc).__name__}: {exc}") from exc
        ran += 1
    assert ran > 0
    if doc == "sampling/README.md":     # the sampler -> loss glue gives a finite loss
        assert torch.isfinite(ns["terms"]["neighbor_fused_loss"])
