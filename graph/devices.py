"""Device strings checked once, with a message that names where the string came from.

``torch.device("gpu0")`` raises a bare RuntimeError and ``torch.device("cuda")`` is accepted on a
CPU-only build, failing later deep in a kernel. :func:`check_device` turns both into a
:class:`DeviceError` naming the flag, key or argument (``what``) at fault.
"""
from __future__ import annotations

import torch

from graph.errors import InputError

__all__ = ["DeviceError", "check_device", "device_problem"]


class DeviceError(InputError):
    """A device string is not a torch device, or names one this machine does not have."""


def device_problem(spec: str | torch.device | None, *, allow_auto: bool = False) -> str | None:
    """Why ``spec`` cannot be used here, or None when it can (None and ``"auto"`` when allowed
    always can). Checks the syntax (cpu, cuda, cuda:N, mps, ...) and that CUDA devices exist."""
    if spec is None or (allow_auto and spec == "auto"):
        return None
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        auto = " or auto" if allow_auto else ""
        return f"{spec!r} is not a torch device (cpu, cuda, cuda:N{auto})"
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return (f"{spec!r}: CUDA is not available (this torch build has CUDA "
                    f"{torch.version.cuda or 'none'}, {torch.cuda.device_count()} visible GPUs); use cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"{spec!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        return f"{spec!r}: MPS is not available on this machine; use cpu"
    return None


def check_device(spec: str | torch.device | None, what: str = "device", *, allow_auto: bool = False,
                 default: str = "cpu") -> torch.device:
    """``spec`` as a ``torch.device``, or a DeviceError naming ``what`` (e.g. ``--device``,
    ``sampler.device``). None (and ``"auto"`` when allowed) resolve to CUDA when available for
    ``auto``, else ``default``."""
    problem = device_problem(spec, allow_auto=allow_auto)
    if problem:
        raise DeviceError(f"{what}: {problem}")
    if spec is None:
        return torch.device(default)
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)
