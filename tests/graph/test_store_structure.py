"""The default open check catches a corrupted CSR (an index out of range, an indptr that runs
backwards) that the sampled checksums miss, and nothing segfaults on a store opened unchecked."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from graph import GraphStoreError, PinBoardGraph
from graph.csr import find_structure_problem
from graph.stats import graph_stats
from graph.storage import MANIFEST, SAMPLE_BLOCK, _sample_offsets, file_record

REPO = Path(__file__).resolve().parents[2]


def _rewrite(store: Path, name: str, position: int, value: int, update_manifest: bool = True) -> None:
    """Set ``NAME.npy[position] = value`` in place; with ``update_manifest`` the manifest's sizes
    and checksums are rewritten to match, so only the structure check can notice."""
    path = store / f"{name}.npy"
    arr = np.load(path)
    arr[position] = value
    np.save(path, arr)
    if update_manifest:
        m = json.loads((store / MANIFEST).read_text())
        m["arrays"][name].update(file_record(path))
        (store / MANIFEST).write_text(json.dumps(m))


@pytest.fixture
def store(tmp_path, helpers) -> Path:
    rng = np.random.default_rng(3)
    p, b, w, _ = helpers.random_edges(rng, 60, 20, 400)
    PinBoardGraph.from_edges(p, b, num_pins=60, num_boards=20, weights=w).save(tmp_path / "store")
    return tmp_path / "store"


@pytest.mark.parametrize("name, position, value, match", [
    ("pin_indices", 123, 20, r"index out of range \[0, 20\): 20 at position 123"),
    ("board_indices", 7, -1, r"index out of range \[0, 60\): -1 at position 7"),
    ("pin_indptr", 30, 10**9, r"indptr decreases from 1000000000 to \d+ at position 31"),
    ("board_indptr", 0, 1, r"indptr runs from 1 to \d+; it must run from 0 to \d+"),
])
def test_default_open_checks_the_structure(store, name, position, value, match):
    _rewrite(store, name, position, value)
    with pytest.raises(GraphStoreError, match=match) as exc:
        PinBoardGraph.open(store)
    msg = str(exc.value)
    assert msg.startswith(str(store / f"{name}.npy")) and 'verify="full"' in msg and "--verify full" in msg
    if name != "board_indptr":  # an indptr that does not start at 0 fails even unverified (O(1))
        g = PinBoardGraph.open(store, verify="none")
        with pytest.raises(GraphStoreError, match=match):
            graph_stats(g)              # scipy would have read out of bounds


def test_corruption_outside_the_sampled_blocks_is_caught(tmp_path):
    # 300k edges: pin_indices.npy (1.2 MB) is larger than the 16 sampled 64 KiB blocks
    rng = np.random.default_rng(0)
    g = PinBoardGraph.from_edges(rng.integers(0, 3000, 300_000), rng.integers(0, 500, 300_000),
                                 num_pins=3000, num_boards=500)
    store = g.save(tmp_path / "store")
    path = store / "pin_indices.npy"
    size = path.stat().st_size
    header = size - 4 * g.num_edges
    sampled = np.zeros(size, bool)
    for off in _sample_offsets(size):
        sampled[off:off + SAMPLE_BLOCK] = True
    position = next(i for i in range(g.num_edges // 2, g.num_edges)
                    if not sampled[header + 4 * i:header + 4 * i + 4].any())
    _rewrite(store, "pin_indices", position, 10**6, update_manifest=False)  # bit rot: the manifest is stale
    with pytest.raises(GraphStoreError, match=rf"pin_indices\.npy: .*10000000? at position {position}"):
        PinBoardGraph.open(store)
    with pytest.raises(GraphStoreError, match="CRC32 mismatch"):
        PinBoardGraph.open(store, verify="full")


def test_graph_stats_exits_2_not_139_on_a_corrupted_store(store, capsys):
    from training.cli import main

    _rewrite(store, "pin_indices", 5, 10**9)
    assert main(["graph-stats", str(store)]) == 2
    assert f"{store / 'pin_indices.npy'}: corrupted graph store" in capsys.readouterr().err
    # verify "none" skips the open check: graph-stats itself must check before scipy reads (a
    # segfault, exit 139, before the fix; in a subprocess so a crash cannot take pytest down)
    proc = subprocess.run([sys.executable, "-m", "training", "graph-stats", str(store), "--verify", "none"],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert f"{store / 'pin_indices.npy'}: corrupted graph store" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 1 << 20])
def test_structure_check_finds_the_first_problem_across_chunks(chunk):
    indptr = np.arange(7, dtype=np.int64)
    indices = np.array([0, 1, 1, 0, 1, 2], np.int32)
    assert find_structure_problem(indptr, indices, 3, chunk) is None
    for bad_at in range(1, 5):                  # a decrease at every chunk offset
        ptr = indptr.copy()
        ptr[bad_at] = 6
        found = find_structure_problem(ptr, indices, 3, chunk)
        assert (found.array, found.position, found.value) == ("indptr", bad_at + 1, bad_at + 1), found
    found = find_structure_problem(indptr[:-1], indices, 3, chunk)
    assert found.array == "indptr" and "ends at 5" in found.problem
    found = find_structure_problem(indptr + 1, indices, 3, chunk)
    assert found.position == 0 and "starts at 1" in found.problem
    for bad_at in range(6):
        idx = indices.copy()
        idx[bad_at] = 3
        idx[-1] = -7 if bad_at < 5 else idx[-1]  # a later problem must not win
        found = find_structure_problem(indptr, idx, 3, chunk)
        assert (found.array, found.position, found.value) == ("indices", bad_at, 3), found
    assert "not an integer type" in find_structure_problem(indptr, indices.astype(np.float32), 3).problem
