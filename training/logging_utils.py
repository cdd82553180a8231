"""Run logs: ``metrics.jsonl`` (one JSON object per logging step: ``step``, ``loss``, the loss terms,
``lr``, ``grad_norm``, ``samples_per_s``, ``data_wait_share``...), ``eval.jsonl``, ``events.jsonl``
(skipped steps, checkpoints, resumes), ``train.log`` (the console lines), TensorBoard event files
under ``tensorboard/`` with ``train.tensorboard=true`` (off by default) when the optional
``tensorboard`` package is installed, and the tqdm progress bar.

Lines are appended and flushed one by one, so a killed run keeps every line it logged. A resumed
run first cuts its logs back to the checkpoint's step (:meth:`JsonlLog.truncate_after`), so the
logs of a killed-and-resumed run read as those of an uninterrupted one.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from graph.atomic import atomic_write_bytes

__all__ = ["JsonlLog", "read_jsonl", "TensorBoardLog", "ConsoleLog", "ProgressBar", "format_terms"]


def _clean(value: Any) -> Any:
    """JSON-safe values: tensors and numpy scalars to floats, non-finite floats to strings."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete line of a JSONL log (a torn last line, from a kill mid-write, is skipped)."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class JsonlLog:
    """An append-only JSON-lines file, flushed after every line."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self._fh = None

    def truncate_after(self, step: int) -> int:
        """Drop lines whose ``step`` is > ``step`` (and torn lines); returns how many remain."""
        if not self.enabled or not self.path.exists():
            return 0
        self.close()
        keep = [r for r in read_jsonl(self.path) if int(r.get("step", 0)) <= step]
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in keep).encode())
        return len(keep)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")
        self._fh.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class TensorBoardLog:
    """Scalars to TensorBoard event files when ``tensorboard`` is importable; otherwise a no-op
    (``available`` says which)."""

    def __init__(self, directory: str | os.PathLike, enabled: bool = True, purge_step: int | None = None):
        self.writer = None
        self.reason = "disabled (train.tensorboard=false)"
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self.reason = "the tensorboard package is not installed: pip install tensorboard"
            return
        # purge_step: a resumed run discards the events logged after its checkpoint.
        self.writer = SummaryWriter(str(directory), purge_step=purge_step)
        self.reason = ""

    @property
    def available(self) -> bool:
        return self.writer is not None

    def scalars(self, step: int, values: dict[str, Any], prefix: str = "train/") -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step":
                self.writer.add_scalar(prefix + k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


class ConsoleLog:
    """Messages to stderr (above the progress bar) and appended to ``train.log``."""

    def __init__(self, path: str | os.PathLike | None, enabled: bool = True):
        self.path = Path(path) if path else None
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if not self.enabled:
            return
        line = f"[{time.strftime('%H:%M:%S')}] {message}"
        try:
            from tqdm import tqdm
            tqdm.write(line, file=sys.stderr)
        except ImportError:  # pragma: no cover
            print(line, file=sys.stderr)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")


_SHORT = {"clip_loss": "clip", "siglip_loss": "siglip", "neighbor_fused_loss": "nb_fused",
          "neighbor_image_loss": "nb_img", "neighbor_image_image_loss": "nb_ii", "neighbor_cross_modal_loss": "nb_x"}


def format_terms(terms: dict[str, float]) -> dict[str, str]:
    """Short names and 3 decimals for the progress bar."""
    out = {"loss": f"{terms['loss']:.3f}"} if "loss" in terms else {}
    for k, v in terms.items():
        if k in _SHORT:
            out[_SHORT[k]] = f"{v:.3f}"
    return out


class ProgressBar:
    """tqdm bar over optimizer steps: loss terms, samples per second and the data-wait share."""

    def __init__(self, total: int, initial: int = 0, enabled: bool = True):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm
            self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)

    def update(self, n: int, terms: dict[str, float], samples_per_s: float, wait_share: float) -> None:
        if self.bar is None:
            return
        post = format_terms(terms)
        post["samples/s"] = f"{samples_per_s:.0f}"
        post["wait"] = f"{100 * wait_share:.0f}%"
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def quiet_third_party() -> None:
    """Silence the progress bars of Hugging Face libraries (``transformers``' "Loading weights"
    bar, ``huggingface_hub``'s download bars) for the rest of the process: what the CLI's
    ``--quiet`` does beside its own bars. A library that is not installed is skipped."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        pass
    else:
        hf_logging.disable_progress_bar()
    try:
        from huggingface_hub.utils import disable_progress_bars
    except ImportError:
        pass
    else:
        disable_progress_bars()
