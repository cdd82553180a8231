"""Shared pieces of the benchmark scripts: the machine description and the JSON report output."""
from __future__ import annotations

import json
import platform
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return cpu


def emit_report(report: dict, out: Path | None, as_json: bool) -> bool:
    """Write ``report`` to ``out`` (when given) and print it when ``as_json``; returns whether it
    printed, so the caller prints its human-readable table otherwise."""
    text = json.dumps(report, indent=1)
    if out:
        Path(out).write_text(text + "\n")
    if as_json:
        print(text)
    return as_json
