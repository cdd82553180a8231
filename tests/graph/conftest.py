"""Shared helpers for graph tests: random edge lists and tiny dataset directories."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from graph import PinBoardGraph


def write_table(directory: Path, name: str, fmt: str, columns: dict[str, Any] | str | bytes) -> Path:
    """Write ``NAME.csv`` or ``NAME.parquet``.

    ``columns``: a dict of column -> list / Arrow array (both formats; CSV is written by hand so
    the test controls every byte), or raw CSV text / bytes (CSV only).
    """
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.{fmt}"
    if isinstance(columns, (str, bytes)):
        assert fmt == "csv"
        path.write_bytes(columns.encode() if isinstance(columns, str) else columns)
        return path
    if fmt == "parquet":
        pq.write_table(pa.table({k: v if isinstance(v, (pa.Array, pa.ChunkedArray)) else pa.array(v)
                                 for k, v in columns.items()}), path)
        return path
    names = list(columns)
    n = len(next(iter(columns.values()))) if names else 0

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        s = str(v)
        return f'"{s}"' if any(ch in s for ch in ',"\n') else s

    lines = [",".join(names)] + [",".join(cell(columns[c][i]) for c in names) for i in range(n)]
    path.write_text("\n".join(lines) + "\n")
    return path


def default_tables() -> dict[str, dict[str, list]]:
    """A valid 4-pin, 3-board dataset with string board ids, weights and timestamps."""
    return {
        "pins": {"pin_id": [10, 11, 12, 13], "text": ["red dress", "blue, sky", None, "cat"],
                 "image": ["img/10.png", None, "img/12.png", "img/13.png"],
                 "fresh": [False, False, True, False]},
        "boards": {"board_id": ["fashion", "nature", "pets"], "name": ["Fashion", None, "Pets"]},
        "edges": {"pin_id": [10, 10, 11, 12, 13, 13, 10, 11],
                  "board_id": ["fashion", "nature", "nature", "fashion", "pets", "nature", "fashion", "fashion"],
                  "weight": [1.0, 2.0, 0.5, 1.0, 3.0, 1.0, 1.5, 1.0],
                  "timestamp": [100, 200, 300, 400, 500, 600, 50, 700]},
    }


def write_dataset(directory: Path, fmt: str = "csv", tables: dict[str, Any] | None = None,
                  **overrides: Any) -> Path:
    """Write a dataset dir; ``overrides`` (pins=..., boards=..., edges=...) replace tables,
    and a table given as None is not written. ``fmt`` may be a dict table -> format."""
    tables = dict(default_tables() if tables is None else tables)
    tables.update(overrides)
    for name, cols in tables.items():
        if cols is None:
            continue
        f = fmt[name] if isinstance(fmt, dict) else fmt
        write_table(directory, name, f, cols)
    return directory


@pytest.fixture
def dataset_dir(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "data", "csv")


def random_edges(rng: np.random.Generator, num_pins: int, num_boards: int, num_edges: int):
    """(pins int64 [E], boards int64 [E], weights float32 [E], timestamps int64 [E]) with repeats."""
    pins = rng.integers(0, num_pins, num_edges)
    boards = rng.integers(0, num_boards, num_edges)
    weights = rng.integers(1, 8, num_edges).astype(np.float32) / 4  # exact in float32 when summed
    timestamps = rng.integers(0, 1000, num_edges)
    return pins, boards, weights, timestamps


@pytest.fixture
def small_graph() -> PinBoardGraph:
    rng = np.random.default_rng(0)
    p, b, w, t = random_edges(rng, 40, 12, 150)
    return PinBoardGraph.from_edges(p, b, num_pins=45, num_boards=13, weights=w, timestamps=t,
                                    pin_external_ids=[f"pin-{i}" for i in range(45)])


def tree_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under ``path`` (relative names): compare stores byte for byte."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def helpers():
    """The helpers above as a namespace (test modules cannot import conftest under
    ``--import-mode=importlib``); session-scoped so hypothesis tests may use it."""
    import types

    return types.SimpleNamespace(write_table=write_table, write_dataset=write_dataset,
                                 default_tables=default_tables, random_edges=random_edges,
                                 tree_digest=tree_digest)
