"""Atomic directory writes: build in a temporary sibling, fsync, then rename into place.

A writer that fails or is killed midway leaves whatever was at the target untouched, and the
temporary sibling (named ``.NAME.tmp-HOST-PID-*``) never looks like a finished store: readers
require a ``manifest.json``, which is written last. A writer killed outright (SIGKILL, power
loss) cannot remove its temporary directory; the next write to the same target on the same host
deletes it once its process is gone (``remove_stale_temporaries``).
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Iterator

from graph.locks import exclusive_lock, release_stale_lock
from graph.output_dir import OutputKind, check_output_dir


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with Linux renameat2(RENAME_EXCHANGE); False if unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    rc = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def fsync_path(path: Path) -> None:
    """fsync a file or directory so a rename after it is durable."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            fsync_path(Path(dirpath) / name)
        fsync_path(Path(dirpath))


def _host_tag() -> str:
    """This machine's name, reduced to characters safe in a file name."""
    host = socket.gethostname() or "host"
    return re.sub(r"[^A-Za-z0-9_.]", "_", host)[:40]


def _temp_prefix(target: Path, kind: str) -> str:
    # Host and pid in the name let a later writer recognise the leftovers of a killed one.
    return f".{target.name}.{kind}-{_host_tag()}-{os.getpid()}-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[^/]*$")


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete the temporary siblings left in ``target``'s parent by writers that were killed.

    Every ``.NAME.tmp-HOST-PID-*`` directory or file in the parent (whatever NAME: the next write
    in the same parent cleans up after any killed writer) created on this host by a process that
    no longer exists is removed; a writer on another host sharing the file system, or a live
    one, is never touched. A ``.NAME.old-`` directory is a previous output moved aside by the
    two-rename fallback: when its writer died before putting the new one in place (``NAME``
    missing) it is moved back, else deleted. Returns the removed (or restored) paths.
    """
    parent = Path(target).absolute().parent
    if not parent.is_dir():
        return []
    host = _host_tag()
    found = []
    for entry in sorted(parent.iterdir()):
        m = _TEMP_NAME.match(entry.name)
        if m is None or m["host"] != host:
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        found.append((m["kind"] != "old", entry, parent / m["name"]))
    removed = [p for p in parent.glob(".*.lock") if release_stale_lock(p)]
    for _not_old, entry, original in sorted(found, key=lambda t: t[0]):  # restore before deleting
        if entry.is_dir() and not entry.is_symlink():
            if entry.name.startswith(f".{original.name}.old-") and not original.exists() \
                    and not original.is_symlink():
                os.rename(entry, original)
            else:
                shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
        removed.append(entry)
    return removed


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (/proc), else set+reset."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, kind: OutputKind, overwrite: bool = True) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` when the block succeeds.

    ``kind`` is the writer's output (``graph.output_dir``): ``target`` must be missing, empty or
    hold that writer's own manifest, else OutputDirError before any work. The write holds the
    target's lock (``graph.locks``), so a second writer of the same target is refused.
    On an exception the temporary directory is removed and ``target`` is left as it was.
    With ``overwrite=False`` an existing ``target`` is an error (raised before any work).
    """
    target = Path(target).absolute()
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists")
    check_output_dir(target, kind)
    with exclusive_lock(target, kind.what):
        check_output_dir(target, kind)  # again under the lock: another writer may have finished
        with _atomic_directory(target) as tmp:
            yield tmp


@contextlib.contextmanager
def _atomic_directory(target: Path) -> Iterator[Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target, "tmp"), dir=target.parent))
    try:
        # mkdtemp creates mode 0700; the finished directory should get the permissions a plain
        # mkdir would give it (shared datasets and stores must stay readable by the group).
        os.chmod(tmp, 0o777 & ~_current_umask())
        yield tmp
        fsync_tree(tmp)
        if target.exists() and _exchange(tmp, target):
            # Atomic swap: at every instant ``target`` is either the old or the new store.
            shutil.rmtree(tmp, ignore_errors=True)
        elif target.exists():
            # Fallback (no renameat2): two renames; the old store stays whole meanwhile.
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target, "old"), dir=target.parent))
            os.rmdir(old)
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
        fsync_path(target.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write one file atomically (temporary sibling, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path, "tmp"), dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), 0o666 & ~_current_umask())  # mkstemp makes 0600
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_path(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
