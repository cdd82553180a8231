"""Run logs: JSONL append/truncate (torn lines from a kill), TensorBoard when installed."""
from __future__ import annotations

import sys
import types

from training.logging_utils import JsonlLog, TensorBoardLog, read_jsonl


def test_jsonl_truncate_after_drops_later_and_torn_lines(tmp_path):
    log = JsonlLog(tmp_path / "m.jsonl")
    for s in range(1, 6):
        log.write({"step": s, "loss": 1.0 / s, "nan": float("nan")})
    log.close()
    with open(tmp_path / "m.jsonl", "a") as fh:
        fh.write('{"step": 6, "lo')                    # a line torn by SIGKILL
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2, 3, 4, 5]
    assert read_jsonl(tmp_path / "m.jsonl")[0]["nan"] == "nan"
    assert log.truncate_after(3) == 3
    log.write({"step": 4, "loss": 0.5})
    assert [r["step"] for r in read_jsonl(tmp_path / "m.jsonl")] == [1, 2, 3, 4]


def test_tensorboard_is_used_when_installed(tmp_path, monkeypatch):
    calls = []

    class FakeWriter:
        def __init__(self, logdir, purge_step=None):
            calls.append(("init", logdir, purge_step))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def flush(self):
            pass

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    tb = TensorBoardLog(tmp_path / "tb", purge_step=5)
    assert tb.available
    tb.scalars(5, {"step": 5, "loss": 1.5, "skipped": 0, "note": "x"})
    tb.close()
    assert calls[0] == ("init", str(tmp_path / "tb"), 5)
    assert ("train/loss", 1.5, 5) in calls and ("train/skipped", 0, 5) in calls and calls[-1] == ("close",)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)      # not installed
    off = TensorBoardLog(tmp_path / "tb2")
    assert not off.available and "not installed" in off.reason
    off.scalars(1, {"loss": 1.0})


def test_tensorboard_is_off_by_default_and_a_missing_package_is_harmless(tmp_path, monkeypatch):
    """train.tensorboard defaults to false (the package is optional: pip install tensorboard); on,
    without the package, the run goes on with metrics.jsonl alone."""
    from training.config import TrainSection
    assert TrainSection().tensorboard is False
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)      # not installed
    tb = TensorBoardLog(tmp_path / "tb", enabled=True)
    assert not tb.available and "pip install tensorboard" in tb.reason
    tb.scalars(1, {"loss": 1.0, "t2i_recall@1": None})
    tb.close()
    assert not (tmp_path / "tb").exists()
