"""A training run's files: the run directory's lock and creation, its config, model config, graph
identity and logs, and its checkpoints (save, and load for an exact resume).

:class:`RunFilesMixin` holds these steps of :class:`training.trainer.Trainer`; it reads the
trainer's attributes (``run_dir``, ``cfg``, ``dist``, ``resume``, ``model``, ``optimizer``,
``scheduler``, ``loader``, ``graph_identity``, ``model_json``, ``frozen_sha256``, ``step``, ...) and
keeps the start-up order documented there: nothing is written before every check passed.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from graph.errors import ToolkitError
from graph.locks import exclusive_lock
from training.checkpoint import (CheckpointError, capture_rng, latest_checkpoint, load_checkpoint, load_model_state,
                                 model_state, save_checkpoint, write_graph_identity)
from training.config import TrainConfigError, save_train_config
from training.distributed import all_gather_object, barrier, parameter_digest
from training.logging_utils import ConsoleLog, JsonlLog, TensorBoardLog

__all__ = ["TrainingError", "RunDirError", "RunFilesMixin", "StartupLog", "has_run"]


class TrainingError(ToolkitError, RuntimeError):
    """Training cannot go on (e.g. repeated non-finite steps, parameters that became NaN or
    infinite); the message says why and what to try."""


class RunDirError(ToolkitError, ValueError):
    """The run directory cannot be used as asked (a fresh run into an existing run, a resume of
    a directory that holds no run)."""


def has_run(run_dir: Path) -> bool:
    return (run_dir / "config.yaml").exists() or latest_checkpoint(run_dir) is not None \
        or (run_dir / "metrics.jsonl").exists()


class StartupLog:
    """The console log of a start whose run directory may not exist yet: each message goes to
    stderr at once and is kept; :meth:`into` appends the kept lines to ``train.log`` once the
    directory exists, so a start that fails its checks leaves no file behind."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.console = ConsoleLog(None, enabled=enabled)
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.console(message)
        if self.enabled:
            self.lines.append(f"[{time.strftime('%H:%M:%S')}] {message}")

    def into(self, path: Path) -> ConsoleLog:
        """The run's ConsoleLog on ``path``, after the kept lines were appended to it."""
        if self.enabled and self.lines:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write("".join(line + "\n" for line in self.lines))
        return ConsoleLog(path, enabled=self.enabled)


class RunFilesMixin:
    """The run-directory and checkpoint steps of the trainer (see the module docstring)."""

    def _lock_run_dir(self) -> None:
        # Taken before the existing-run check, so two starts on one directory cannot both pass it.
        if self.dist.is_main:
            self._held.enter_context(exclusive_lock(self.run_dir, "training run"))

    def _check_run_dir(self) -> None:
        d = self.cfg.data
        if not (d.graph or d.dataset):
            raise TrainConfigError("keys 'data.dataset' and 'data.graph' are both null: set data.dataset=DATASET_DIR "
                                   "(a dataset directory) or data.graph=GRAPH_DIR (a built graph store)")
        if self.resume or not self.dist.is_main:
            return
        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise RunDirError(f"--out {self.run_dir}: exists and is not a directory")
        if has_run(self.run_dir):
            raise RunDirError(f"{self.run_dir} already holds a training run; continue it with "
                              f"`pinclip train --resume {self.run_dir}` or pick another --out")

    def _load_checkpoint(self, checkpoint: str | os.PathLike | None) -> dict[str, Any] | None:
        """Check the checkpoint to resume from against this run and load it into the model,
        optimizer, scheduler and loader (nothing is written). Returns {"path", "rng"} for
        :meth:`_begin`, or None when the run has no checkpoint yet."""
        rec = Path(checkpoint) if checkpoint else latest_checkpoint(self.run_dir)
        if rec is None:
            return None
        state = load_checkpoint(rec)
        path = state["_path"]
        if state["world_size"] != self.dist.world_size:
            raise CheckpointError(f"{path}: written by {state['world_size']} rank(s), resumed with "
                                  f"{self.dist.world_size}; resume with the same number of processes")
        if state["model_config"] != self.model_json:
            saved, now = json.loads(state["model_config"]), json.loads(self.model_json)
            diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
            raise CheckpointError(f"{path}: incompatible: the model config differs in {', '.join(diff)}")
        if state["frozen_sha256"] != self.frozen_sha256:
            raise CheckpointError(f"{path}: incompatible: the frozen tower weights differ from those it was "
                                  "trained with (another pretrained checkpoint?)")
        load_model_state(self.model, state["model"], path)
        try:
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.loader.load_state_dict(state["loader"][self.dist.rank])
        except (ValueError, KeyError, IndexError) as exc:
            raise CheckpointError(f"{path}: incompatible: {exc}") from None
        # The schedule is recomputed (train.max_steps may have been raised for the resume): the
        # optimizer's saved lr belongs to the old schedule.
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.step = int(state["step"])
        self.nonfinite = dict(state["nonfinite"])
        self.samples_seen = int(state.get("samples_seen", 0))
        return {"path": path, "rng": state["rng"][self.dist.rank]}

    def _make_run_dir(self) -> None:
        if not self.run_dir.exists():
            self.run_dir.mkdir(parents=True)
            self._created_run_dir = True

    def _open_run_dir(self) -> None:
        """Every check passed: create the run directory (fresh run), write its config, model
        config and graph identity, and open the logs (the start-up lines so far go first)."""
        main = self.dist.is_main
        if main:
            self._make_run_dir()
            if not self.resume:
                save_train_config(self.cfg, self.run_dir / "config.yaml")
                (self.run_dir / "model_config.json").write_text(self.model_json + "\n")
                write_graph_identity(self.run_dir, self.graph_identity)
        barrier(self.dist)
        self.log = self.log.into(self.run_dir / "train.log")
        self.metrics = JsonlLog(self.run_dir / "metrics.jsonl", enabled=main)
        self.eval_log = JsonlLog(self.run_dir / "eval.jsonl", enabled=main)
        self.events = JsonlLog(self.run_dir / "events.jsonl", enabled=main)
        self.tb = TensorBoardLog(self.run_dir / "tensorboard", enabled=False)

    def _discard_failed_start(self) -> None:
        """Remove what a failed fresh start wrote: the run directory when this start created it
        (it holds only what the start wrote: the lock kept other writers out), else the graph
        store it built in a directory that already existed."""
        if self._created_run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        elif self._built_graph is not None:
            shutil.rmtree(self._built_graph, ignore_errors=True)

    def close(self) -> None:
        """Release the run directory's lock (and close the logs). :meth:`train` calls it when it
        ends, by success or error; a trainer that is never trained should be closed. Idempotent."""
        for name in ("metrics", "eval_log", "events"):
            log = getattr(self, name, None)
            if log is not None:
                log.close()
        self._held.close()

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "model": model_state(self.model), "frozen_sha256": self.frozen_sha256,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "loader": all_gather_object(self.loader.state_dict(), self.dist),
                "rng": all_gather_object(capture_rng(self.device), self.dist),
                "nonfinite": dict(self.nonfinite), "samples_seen": self.samples_seen,
                "world_size": self.dist.world_size, "model_config": self.model_json,
                "config": OmegaConf.to_yaml(self.cfg, resolve=True)}

    def _cut_logs(self, step: int) -> None:
        if self.dist.is_main:
            self.metrics.truncate_after(step)
            self.eval_log.truncate_after(step)

    def save(self) -> Path | None:
        state = self.state_dict()  # collective: every rank takes part
        digests = all_gather_object(parameter_digest(self.model), self.dist)
        if len(set(digests)) > 1:
            raise TrainingError(f"step {self.step}: the ranks' parameters diverged (digests {digests}); "
                                "this is a bug in the data-parallel setup")
        path = None
        if self.dist.is_main:
            path = save_checkpoint(self.run_dir, self.step, state, keep=self.cfg.train.keep_checkpoints)
            self.events.write({"step": self.step, "event": "checkpoint", "path": str(path)})
        barrier(self.dist)
        return path
