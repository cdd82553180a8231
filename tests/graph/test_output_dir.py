"""The output policy (graph.output_dir) and the writer lock (graph.locks): nothing of the
user's is replaced, a second writer is refused, a killed writer's leftovers are cleaned."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from graph import PinBoardGraph
from graph.atomic import _host_tag, atomic_directory
from graph.locks import LockedError, exclusive_lock, lock_path
from graph.output_dir import OutputDirError, OutputKind, check_output_dir
from graph.storage import STORE_OUTPUT

KIND = OutputKind("a test output", "the test writer", "manifest.json", "format", "test-output")
REPO = Path(__file__).resolve().parents[2]


def _own(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").write_text(json.dumps({"format": "test-output"}))
    return d


def test_missing_empty_and_own_output_are_allowed(tmp_path):
    assert check_output_dir(tmp_path / "new", KIND) == tmp_path / "new"
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", KIND)
    check_output_dir(_own(tmp_path / "mine"), KIND)


@pytest.mark.parametrize("case, expected", [
    ("user folder", "2 entries of its own (notes.txt, photo.jpg)"),
    ("file", "is a file, not a directory"),
    ("symlink", "is a symbolic link"),
    ("training run", "a training run"),
    ("dataset", "a dataset (pins table)"),
    ("graph store", "a graph store (pinclip build-graph)"),
    ("foreign manifest", "manifest.json of another format (format='something-else')"),
    ("unreadable manifest", "manifest.json that is not a readable toolkit manifest"),
])
def test_anything_else_is_refused_naming_what_it_holds(tmp_path, case, expected):
    target = tmp_path / "out"
    if case == "file":
        target.write_text("precious")
    elif case == "symlink":
        _own(tmp_path / "elsewhere")
        target.symlink_to(tmp_path / "elsewhere")
    else:
        target.mkdir()
        files = {"user folder": {"notes.txt": "a", "photo.jpg": "b"},
                 "training run": {"config.yaml": "x: 1", "metrics.jsonl": ""},
                 "dataset": {"pins.parquet": "", "edges.parquet": ""},
                 "foreign manifest": {"manifest.json": '{"format": "something-else"}'},
                 "unreadable manifest": {"manifest.json": "{not json"}}.get(case, {})
        for name, text in files.items():
            (target / name).write_text(text)
        if case == "graph store":
            PinBoardGraph.from_edges([0, 1], [0, 0]).save(target)
    before = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()
    with pytest.raises(OutputDirError) as info:
        check_output_dir(target, KIND)
    msg = str(info.value)
    assert msg.startswith(f"{target}: ") and expected in msg and "a test output" in msg
    after = sorted(p.name for p in target.iterdir()) if target.is_dir() else target.read_text()
    assert after == before


def test_current_directory_and_its_parents_are_refused(tmp_path, monkeypatch):
    cwd = _own(tmp_path / "work" / "here")  # even an output of the same writer
    monkeypatch.chdir(cwd)
    for target in (Path("."), tmp_path / "work"):
        with pytest.raises(OutputDirError, match="current directory"):
            check_output_dir(target, KIND)


def test_atomic_directory_refuses_before_any_work(tmp_path):
    user = tmp_path / "user"
    user.mkdir()
    (user / "keep.txt").write_text("mine")
    ran = []
    with pytest.raises(OutputDirError):
        with atomic_directory(user, KIND):
            ran.append(1)
    assert not ran and (user / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]  # no temporary, no lock file left


def test_store_with_non_store_manifest_is_not_replaced(tmp_path):
    # the reported case: a manifest.json that is valid JSON but not a store manifest
    d = tmp_path / "d"
    d.mkdir()
    (d / "manifest.json").write_text('{"name": "my project"}')
    with pytest.raises(OutputDirError, match="manifest.json"):
        PinBoardGraph.from_edges([0], [0]).save(d)
    assert (d / "manifest.json").read_text() == '{"name": "my project"}'
    with pytest.raises(OutputDirError):
        check_output_dir(d, STORE_OUTPUT)


def test_stale_temporaries_of_any_writer_in_the_parent_are_cleaned(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    pid = int(dead.stdout)
    other_dir = tmp_path / f".emb.tmp-{_host_tag()}-{pid}-abc"
    other_dir.mkdir()
    other_file = tmp_path / f".metrics.json.tmp-{_host_tag()}-{pid}-xyz"
    other_file.write_text("half")
    stale_lock = tmp_path / ".emb.lock"
    stale_lock.write_text(f"{pid}\n")
    user_lock = tmp_path / ".user.lock"
    user_lock.write_text("not ours")  # not a pid: never touched
    with atomic_directory(tmp_path / "store", KIND) as tmp:
        _own(tmp)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".user.lock", "store"]


_HOLDER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {repo!r})
    from graph.locks import exclusive_lock
    with exclusive_lock({target!r}, "training run"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_second_writer_is_refused_naming_the_holder_and_a_killed_one_leaves_no_lock(tmp_path):
    target = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER.format(repo=str(REPO), target=str(target))],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError, match=f"training run is being written by process {holder.pid}"):
            with exclusive_lock(target, "training run"):
                pass
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert not target.exists()  # the lock is a sibling: taking it creates nothing at the target
    with exclusive_lock(target, "training run"):  # the kernel released the killed holder's lock
        with exclusive_lock(target, "training run"):  # re-entrant in one process
            assert lock_path(target).read_text().strip() == str(os.getpid())
    assert not lock_path(target).exists()
