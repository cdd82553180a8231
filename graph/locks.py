"""One writer at a time: an OS file lock per output (run directory, store, export).

``exclusive_lock(target, what)`` takes ``fcntl.flock`` on a sibling file ``.NAME.lock`` next to
``target`` (a sibling, so the target itself need not exist yet and is never created early). The
kernel releases a flock when its process dies, so a killed writer never leaves a stale lock;
the lock file holds the holder's process id for the message a second writer gets. Locks are
re-entrant within one process (``embed`` inside ``evaluate`` inside ``demo``).
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import threading
from pathlib import Path
from typing import Iterator

from graph.errors import ToolkitError

__all__ = ["LockedError", "exclusive_lock", "lock_path", "release_stale_lock"]

_held: dict[Path, int] = {}
_held_guard = threading.Lock()


class LockedError(ToolkitError):
    """Another live process is writing the same target."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of ``target``: ``PARENT/.NAME.lock``."""
    target = Path(target).expanduser().absolute()
    return target.parent / f".{target.name}.lock"


def _holder(path: Path) -> str:
    try:
        text = path.read_text().strip()
    except OSError:
        return "another process"
    return f"process {text}" if text.isdigit() else "another process"


@contextlib.contextmanager
def exclusive_lock(target: str | os.PathLike, what: str = "this directory") -> Iterator[None]:
    """Hold the write lock of ``target`` for the block; LockedError at once when another process
    holds it (the message names its pid). ``what`` names the target in the message
    (e.g. "training run")."""
    target = Path(target).expanduser().absolute()
    path = lock_path(target)
    with _held_guard:
        if path in _held:
            _held[path] += 1
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _held_guard:
                _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise LockedError(f"{target}: {what} is being written by {_holder(path)} (lock {path}); "
                              "wait for it to finish or stop it, then try again") from None
        # The previous holder unlinks the file on release; a lock on an unlinked inode locks nothing.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        with _held_guard:
            _held[path] = 1
        yield
    finally:
        with _held_guard:
            _held.pop(path, None)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def release_stale_lock(path: Path) -> bool:
    """Remove ``path`` when it is a lock file of this module that no live process holds (the
    leftover of a killed writer: harmless, but clutter). Returns True when it was removed."""
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 32:
            return False
        text = path.read_text()
        if not text.strip().isdigit() or path.absolute() in _held:
            return False
        fd = os.open(path, os.O_RDWR)
    except (OSError, UnicodeDecodeError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False  # held by a live writer
    try:
        if os.fstat(fd).st_ino != os.stat(path).st_ino:
            return False
        os.unlink(path)  # unlinked while we hold it: a racing writer sees the inode change and retries
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(fd)
