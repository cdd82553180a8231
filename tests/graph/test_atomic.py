"""Atomic writes: a failed or killed build leaves the previous store intact."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import graph.storage
from graph import PinBoardGraph
from graph.atomic import atomic_directory, atomic_write_bytes, remove_stale_temporaries
from graph.output_dir import OutputKind

KIND = OutputKind("a test output", "this test", "m.json", "format", "t")


def _mark(d: Path) -> None:
    (d / "m.json").write_text('{"format": "t"}')

REPO = Path(__file__).resolve().parents[2]


def _siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def test_atomic_directory_commits_and_rolls_back(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target, KIND) as tmp:
        (tmp / "a").write_text("one")
        _mark(tmp)
        assert not target.exists()  # nothing visible until the block succeeds
    assert (target / "a").read_text() == "one"
    with pytest.raises(RuntimeError):
        with atomic_directory(target, KIND) as tmp:
            (tmp / "a").write_text("two")
            raise RuntimeError("boom")
    assert (target / "a").read_text() == "one"
    assert _siblings(target) == ["out"]
    with atomic_directory(target, KIND) as tmp:
        (tmp / "b").write_text("three")
    assert sorted(p.name for p in target.iterdir()) == ["b"]  # replaced, not merged
    with pytest.raises(FileExistsError):
        with atomic_directory(target, KIND, overwrite=False):
            pass


def test_atomic_outputs_respect_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_directory(tmp_path / "d", KIND) as tmp:
            (tmp / "f").write_text("x")
        atomic_write_bytes(tmp_path / "file.bin", b"abc")
    finally:
        os.umask(old)
    # mkdtemp / mkstemp would give 0700 / 0600: a shared store must stay group-readable
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "file.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "file.bin").read_bytes() == b"abc"


def test_exception_while_writing_keeps_old_store(tmp_path, small_graph, helpers, monkeypatch):
    target = tmp_path / "store"
    small_graph.save(target)
    before = helpers.tree_digest(target)
    real_write = graph.storage.write_array
    calls = []

    def failing_write(directory, name, array):
        calls.append(name)
        if len(calls) == 3:
            raise OSError("disk full (simulated)")
        return real_write(directory, name, array)

    monkeypatch.setattr(graph.storage, "write_array", failing_write)
    other = PinBoardGraph.from_edges([0, 1, 2], [2, 1, 0], weights=[1.0, 2.0, 3.0])
    with pytest.raises(OSError, match="disk full"):
        other.save(target)
    assert len(calls) == 3
    assert helpers.tree_digest(target) == before
    assert _siblings(target) == ["store"]  # no temporary directory left behind
    g = PinBoardGraph.open(target, verify="full")
    assert g.num_edges == small_graph.num_edges


# A child process that writes a different graph very slowly (it sleeps after each array), so
# the parent can SIGKILL it while its temporary directory is half written.
_SLOW_WRITER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import graph.storage as storage
    from graph import PinBoardGraph

    real = storage.write_array
    def slow(directory, name, array):
        rec = real(directory, name, array)
        print("wrote", name, flush=True)
        time.sleep(0.5)
        return rec
    storage.write_array = slow
    rng = np.random.default_rng(1)
    g = PinBoardGraph.from_edges(rng.integers(0, 5000, 200_000), rng.integers(0, 500, 200_000),
                                 weights=rng.random(200_000))
    g.save(sys.argv[1])
    print("finished", flush=True)
""")


def test_sigkill_during_build_keeps_old_store(tmp_path, small_graph, helpers):
    target = tmp_path / "store"
    small_graph.save(target)
    before = helpers.tree_digest(target)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                             text=True, env=env, cwd=REPO)
    try:
        lines = []
        deadline = time.monotonic() + 60
        while len(lines) < 2 and time.monotonic() < deadline:  # two arrays written, more to come
            line = child.stdout.readline()
            if not line:
                break
            lines.append(line.strip())
        assert lines == ["wrote pin_indptr", "wrote pin_indices"], lines
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    # the old store is untouched and still opens; the half-written temp dir is not a store
    assert helpers.tree_digest(target) == before
    assert PinBoardGraph.open(target, verify="full").num_edges == small_graph.num_edges
    # the killed writer's lock file stays behind, but the kernel released its lock with the process
    leftovers = [p for p in tmp_path.iterdir() if p.name not in ("store", ".store.lock")]
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".store.tmp-")
    with pytest.raises(graph.storage.GraphStoreError, match="not a finished graph store"):
        PinBoardGraph.open(leftovers[0])
    # the next write on this host removes the dead writer's leftovers
    PinBoardGraph.from_edges([0], [0]).save(target)
    assert _siblings(target) == ["store"]


def test_stale_temporaries_of_live_processes_are_kept(tmp_path):
    target = tmp_path / "store"
    with atomic_directory(target, KIND) as tmp:
        # our own (live) temporary directory is never a stale one
        assert remove_stale_temporaries(target) == []
        assert tmp.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    from graph.atomic import _host_tag
    stale = tmp_path / f".store.tmp-{_host_tag()}-{pid}-xyz"
    foreign = tmp_path / f".store.tmp-otherhost-{pid}-xyz"
    stale.mkdir()
    foreign.mkdir()
    assert remove_stale_temporaries(target) == [stale]
    assert foreign.exists() and not stale.exists()


def test_open_memory_maps_survive_a_replace(tmp_path, small_graph):
    # a reader holding the old store keeps valid data after a writer swaps in a new one
    target = tmp_path / "store"
    small_graph.save(target)
    g = PinBoardGraph.open(target)
    expected = g.pin_indices.clone()
    PinBoardGraph.from_edges([0], [0]).save(target)
    assert np.array_equal(g.pin_indices.numpy(), expected.numpy())
    assert PinBoardGraph.open(target).num_edges == 1


def test_store_moved_aside_by_a_killed_fallback_writer_is_restored(tmp_path, small_graph, helpers):
    # the two-rename fallback (no renameat2) moves the old store to .NAME.old-*; a writer killed
    # before the second rename leaves no target: the next writer must put the old store back
    from graph.atomic import _host_tag
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    target = tmp_path / "store"
    small_graph.save(target)
    before = helpers.tree_digest(target)
    old = tmp_path / f".store.old-{_host_tag()}-{pid}-abc"
    os.rename(target, old)
    half = tmp_path / f".store.tmp-{_host_tag()}-{pid}-def"
    half.mkdir()
    assert remove_stale_temporaries(target) == [old, half]
    assert helpers.tree_digest(target) == before and _siblings(target) == ["store"]


def test_fallback_without_renameat2(tmp_path, small_graph, monkeypatch):
    import graph.atomic
    monkeypatch.setattr(graph.atomic, "_exchange", lambda a, b: False)
    target = tmp_path / "store"
    small_graph.save(target)
    PinBoardGraph.from_edges([0, 1], [1, 0]).save(target)
    assert PinBoardGraph.open(target, verify="full").num_edges == 2
    assert _siblings(target) == ["store"]
