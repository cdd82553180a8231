"""How many CPU threads the samplers' torch kernels use (default: 1).

The samplers are long chains of small, memory-bound torch kernels (gathers over 10^5 - 10^6
elements). Spreading each kernel over several OpenMP threads gains little, and costs a barrier
per kernel: when another process holds one of the cores, every kernel waits for the preempted
thread, and a sampler call slows down 10-100x (measured on the shared 2-core development machine:
a 100k-element multiply took 6.3 ms on 2 threads against 0.06 ms on 1). So on CPU the samplers
run their kernels on ``get_num_threads()`` threads (1 by default; the environment variable
``PINCLIP_SAMPLER_THREADS`` or ``set_num_threads`` changes it; ``None`` leaves torch's setting
alone), restoring torch's setting afterwards. Parallelism across batches comes from DataLoader
workers instead, which torch runs single-threaded anyway. GPU sampling is unaffected.

torch's thread count is process-wide: a process that samples on CPU in a background thread while
another thread runs multi-threaded torch work should call ``set_num_threads(None)``.
"""
from __future__ import annotations

import functools
import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

import torch

__all__ = ["set_num_threads", "get_num_threads", "sampler_threads", "with_sampler_threads"]

_env = os.environ.get("PINCLIP_SAMPLER_THREADS", "1").strip().lower()
_THREADS: int | None = None if _env in ("", "none", "torch") else max(1, int(_env))


def set_num_threads(n: int | None) -> None:
    """Threads for the samplers' CPU kernels; ``None``: use torch's global setting."""
    global _THREADS
    if n is not None and int(n) < 1:
        raise ValueError(f"set_num_threads({n}): expected >= 1 or None")
    _THREADS = None if n is None else int(n)


def get_num_threads() -> int | None:
    return _THREADS


@contextmanager
def sampler_threads(device: torch.device | str | None = "cpu") -> Iterator[None]:
    """Run the block with the samplers' thread count (CPU only), then restore torch's."""
    if _THREADS is None or (device is not None and torch.device(device).type != "cpu"):
        yield
        return
    old = torch.get_num_threads()
    if old == _THREADS:
        yield
        return
    torch.set_num_threads(_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(old)


F = TypeVar("F", bound=Callable[..., Any])


def with_sampler_threads(fn: F) -> F:
    """Decorator for sampler entry points (the thread count applies to CPU work only; a GPU
    sampler's host-side work is small)."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with sampler_threads("cpu"):
            return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]
