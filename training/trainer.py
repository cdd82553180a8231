"""The PinCLIP trainer: AdamW + warmup/cosine, gradient clipping, bf16 autocast, gradient
accumulation over cached features, a non-finite guard, atomic checkpoints and exact resume,
data-parallel ranks, progress and logs.

    from training.config import load_train_config
    from training.trainer import Trainer
    cfg = load_train_config("training/configs/demo.yaml", ["data.dataset=/data/world"])
    summary = Trainer(cfg, "runs/demo").train()
    summary = Trainer(None, "runs/demo", resume=True).train()      # continue a killed run

A step: the loader hands over a batch (seeds, their sampled neighbors, negatives, features);
``training.step.compute_gradients`` runs forward/backward (``train.accum_freq`` micro-batches,
the loss always over the full batch); gradients are averaged over ranks, clipped to
``optim.grad_clip``; a step whose loss or gradient norm is not finite is skipped (no update,
logged to ``events.jsonl``), and ``train.max_nonfinite_steps`` consecutive skips stop the run with
:class:`TrainingError`. A step that leaves any trainable parameter NaN or infinite stops the run
at once (TrainingError naming the step and parameter), before those weights reach a checkpoint.
The learning-rate schedule advances on every step, skipped or not, so it stays aligned with the
data.

Run directory: created only once every start-up check passed (a failed start leaves nothing),
locked for the trainer's life (one writer per run), with ``graph_identity.json`` recording the
graph store the run trains on; ``--resume`` refuses a store that changed since.

Exact resume: batches are a function of (seed, epoch, index) only, and a checkpoint holds the
model, optimizer, scheduler, loader position and every RNG of every rank; a resumed run cuts its
logs back to the checkpoint and logs the same losses an uninterrupted run would have.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from graph.atomic import atomic_write_bytes
from graph.errors import ToolkitError
from graph.locks import exclusive_lock
from pinclip import PinCLIPLoss, create_model
from pinclip.factory import get_image_transform, get_tokenizer
from sampling import SeedBatches, build_sampler
from training import step as step_mod
from training.checkpoint import (CheckpointError, check_graph_identity, graph_identity, latest_checkpoint,
                                 load_checkpoint, load_model_state, model_state, read_graph_identity,
                                 save_checkpoint, write_graph_identity)
from training.config import (TrainConfigError, load_train_config, resolve_model_config, sampler_config,
                             save_train_config)
from training.data import PinFeatureFetcher, TrainBatchDataset, TrainLoader, prepare_graph, train_pins
from training.distributed import (DistInfo, all_gather_object, all_reduce_mean, average_gradients, barrier,
                                  broadcast_parameters, init_distributed, parameter_digest, shutdown)
from training.embed import encode_pins
from training.evaluation.quick_eval import quick_eval
from training.logging_utils import ConsoleLog, JsonlLog, ProgressBar, TensorBoardLog
from training.text_cache import get_text_cache

__all__ = ["Trainer", "TrainingError", "RunDirError", "build_optimizer", "cosine_lr_lambda"]


class TrainingError(ToolkitError, RuntimeError):
    """Training cannot go on (e.g. repeated non-finite steps, parameters that became NaN or
    infinite); the message says why and what to try."""


class RunDirError(ToolkitError, ValueError):
    """The run directory cannot be used as asked (a fresh run into an existing run, a resume of
    a directory that holds no run)."""


def build_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.AdamW:
    """AdamW; no weight decay on 0/1-d parameters (gains, biases, logit scales), as open_clip.

    ``cfg.lr_scale`` ({name prefix: multiplier}) gives parameter groups their own learning rate
    (``lr * multiplier``; the scheduler's multiplier applies to every group alike). Group 0 is
    always the unscaled decay group, so ``param_groups[0]["lr"]`` is the run's base lr."""
    scales = {str(k): float(v) for k, v in dict(getattr(cfg, "lr_scale", None) or {}).items()}
    for prefix, value in scales.items():
        if not value > 0:
            raise TrainConfigError(f"optim.lr_scale.{prefix} must be > 0, got {value}")
    matched: set[str] = set()
    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        hits = [k for k in scales if name == k or name.startswith(k + ".")]
        key = max(hits, key=len) if hits else None
        if key is not None:
            matched.add(key)
        decay = not (p.ndim < 2 or "logit_scale" in name or "logit_bias" in name)
        groups.setdefault((decay, scales[key] if key else 1.0), []).append(p)
    unmatched = sorted(set(scales) - matched)
    if unmatched:
        tops = sorted({n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad})
        raise TrainConfigError(f"key optim.lr_scale: {unmatched} match(es) no trainable parameter (trainable modules: {tops})")
    lr = float(cfg.lr)
    param_groups = [{"params": params, "weight_decay": float(cfg.weight_decay) if decay else 0.0, "lr": lr * scale}
                    for (decay, scale), params in groups.items() if params or scale == 1.0]
    return torch.optim.AdamW(param_groups, lr=lr, betas=tuple(float(b) for b in cfg.betas), eps=float(cfg.eps))


def cosine_lr_lambda(lr: float, min_lr: float, warmup: int, max_steps: int, schedule: str = "cosine"):
    """Multiplier of ``lr`` at a step: linear warmup ((s + 1) / warmup), then cosine to min_lr."""
    def f(s: int) -> float:
        if s < warmup:
            return (s + 1) / warmup
        if schedule == "constant":
            return 1.0
        span = max(1, max_steps - warmup)
        progress = min(1.0, (s - warmup) / span)
        return (min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (lr - min_lr)) / lr
    return f


def _capture_rng(device: torch.device) -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
            "python": random.getstate()}


def _restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), n[2], n[3], n[4]))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def _frozen_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        if not p.requires_grad:
            t = p.detach().cpu().contiguous().reshape(-1)
            h.update(name.encode())
            h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _has_run(run_dir: Path) -> bool:
    return (run_dir / "config.yaml").exists() or latest_checkpoint(run_dir) is not None \
        or (run_dir / "metrics.jsonl").exists()


class _StartupLog:
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


class Trainer:
    """Builds a run from a config (or resumes one) and trains it. See the module docstring.

    cfg: a loaded training config (``load_train_config``); None with ``resume=True`` (the run's
    saved ``config.yaml``, with ``overrides`` applied). run_dir: the run directory.
    callbacks: called on every rank after every optimizer step as ``callback(step, terms)``: step
    int (1-based, the step just done), terms {name: float} (the loss terms, ``grad_norm``, ``lr``,
    ``skipped``), e.g. a live loss plot in a notebook. They must not draw random numbers from the
    global generators, or a resumed run would no longer match an uninterrupted one.

    Start-up: every check and build that can fail for a user reason (the config, the lock, an
    existing run, the model, the graph store, batch size against the train pins, the checkpoint
    to resume) runs before the run directory is written, so a failed start leaves nothing behind
    and the corrected command works on the same directory. The main rank holds the run
    directory's lock (``graph.locks``, a sibling ``.NAME.lock``) from before the directory is
    created until :meth:`train` ends or :meth:`close`; a second trainer on the same directory gets
    ``graph.locks.LockedError`` naming this process.
    """

    def __init__(self, cfg: DictConfig | None, run_dir: str | os.PathLike, *, resume: bool = False,
                 overrides: list[str] | None = None, checkpoint: str | os.PathLike | None = None,
                 callbacks: Iterable[Callable[[int, dict], Any]] = ()):
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.resume = bool(resume)
        self._held = contextlib.ExitStack()        # the run directory's lock, until train() ends / close()
        self._created_run_dir = False              # what a failed fresh start removes again
        self._built_graph: Path | None = None
        self.cfg = self._resolve_config(cfg, overrides)
        self.dist: DistInfo = init_distributed(self.cfg.train.device)
        self.log: Callable[[str], None] = _StartupLog(enabled=self.dist.is_main)
        try:
            self._lock_run_dir()
            self._check_run_dir()
            self._seed()
            self._build_model()
            self._build_optimizer()
            self._build_graph()
            self._build_seeds()
            self._build_fetchers()
            self._build_sampler()
            self._build_loader()
            resume_state = self._load_checkpoint(checkpoint) if self.resume else None
            self._open_run_dir()
            self._begin(resume_state)
        except BaseException:
            if self.dist.is_main and not self.resume:
                self._discard_failed_start()
            self.close()
            raise

    # ------------------------------------------------------------------ start-up steps
    def _resolve_config(self, cfg: DictConfig | None, overrides: list[str] | None) -> DictConfig:
        if self.resume:
            if not (self.run_dir / "config.yaml").is_file():
                raise RunDirError(f"--resume {self.run_dir}: not a training run (no config.yaml)")
            return load_train_config(self.run_dir / "config.yaml", overrides)
        if cfg is None:
            raise ValueError("Trainer needs a config (or resume=True)")
        # Absolute data paths: the saved config must resume from any working directory.
        for key in ("dataset", "graph", "image_root", "cache_dir"):
            value = cfg.data[key]
            if value:
                cfg.data[key] = str(Path(value).expanduser().absolute())
        return cfg

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
        if _has_run(self.run_dir):
            raise RunDirError(f"{self.run_dir} already holds a training run; continue it with "
                              f"`pinclip train --resume {self.run_dir}` or pick another --out")

    def _seed(self) -> None:
        t = self.cfg.train
        if t.threads:
            torch.set_num_threads(int(t.threads))
        random.seed(t.seed)
        np.random.seed(t.seed)
        torch.manual_seed(t.seed)

    def _build_model(self) -> None:
        self.device = self.dist.device
        self.model_config = resolve_model_config(self.cfg)
        self.model = create_model(self.model_config).to(self.device)
        broadcast_parameters(self.model, self.dist)
        self.params = self.model.trainable_parameters()
        self.param_names = [n for n, p in self.model.named_parameters() if p.requires_grad]
        self.frozen_sha256 = _frozen_digest(self.model)
        self.model_json = json.dumps(dataclasses.asdict(self.model_config), indent=2)
        self.uses_neighbors = self.model.neighbor_logit_scale is not None
        self.loss_fn = PinCLIPLoss.from_config(self.model.config)

    def _build_optimizer(self) -> None:
        o, t = self.cfg.optim, self.cfg.train
        self.optimizer = build_optimizer(self.model, o)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, cosine_lr_lambda(o.lr, o.min_lr, o.warmup_steps, t.max_steps, o.schedule))
        self.step = 0
        self.nonfinite = {"consecutive": 0, "total": 0}
        self.samples_seen = 0

    def _build_graph(self) -> None:
        d, main = self.cfg.data, self.dist.is_main
        if main and not self.resume and not d.graph and not (self.run_dir / "graph" / "manifest.json").is_file():
            # prepare_graph builds data.dataset into RUN_DIR/graph: the one start-up step that
            # writes into the run directory before every check passed. The simplest correct
            # order: it runs after every check that does not need the graph, and should a later
            # check fail, _discard_failed_start removes what was made here (the directory when
            # this start created it, else the graph store). The lock keeps other writers out
            # meanwhile.
            self._make_run_dir()
            self._built_graph = self.run_dir / "graph"
        self.graph = prepare_graph(self.cfg, self.run_dir, main, lambda: barrier(self.dist), self.log)
        self.graph_identity = graph_identity(self.graph.path)
        if self.resume:
            check_graph_identity(
                read_graph_identity(self.run_dir), self.graph.path, f"--resume {self.run_dir}",
                "Resuming would train on other edges than the run's checkpoints did: restore the store it "
                "trained on (same dataset and split parameters), or train a new run on the changed store "
                "(pinclip train --config ... --out NEW_DIR).", log=self.log)

    def _build_seeds(self) -> None:
        """The train pins (seeds and negatives: every pin but the cold-start ones) and this rank's
        seed batches; a batch size no rank can fill fails here."""
        t, s = self.cfg.train, self.cfg.sampler
        self.seeds = train_pins(self.graph)
        self.batches = SeedBatches(self.seeds, t.batch_size, shuffle=True, drop_last=True, seed=s.seed,
                                   rank=self.dist.rank, world_size=self.dist.world_size)
        if len(self.batches) == 0:
            raise TrainConfigError(
                f"key 'train.batch_size' = {t.batch_size}: larger than the {self.batches.num_per_rank} train pins "
                f"of each of {self.dist.world_size} rank(s) ({self.graph.num_pins} pins in {self.graph.path}, "
                f"{self.graph.num_pins - self.seeds.numel()} of them cold-start): no full batch; "
                "lower train.batch_size")

    def _build_fetchers(self) -> None:
        """The pin feature fetchers of training (augmented images when ``data.augment``) and
        evaluation; frozen text towers' features come from the text cache (built here if needed)."""
        cfg, t, main = self.cfg, self.cfg.train, self.dist.is_main
        transform = get_image_transform(self.model, train=bool(cfg.data.augment))
        eval_transform = get_image_transform(self.model, train=False)
        tokenizer = get_tokenizer(self.model)
        images = self._image_policy()
        if cfg.data.text_cache == "auto" and self.model.text.frozen:
            cache = get_text_cache(self.model, tokenizer, self.graph.features, self.graph.num_pins,
                                   cfg.data.cache_dir, self.device, progress=main and t.progress, is_main=main,
                                   barrier=lambda: barrier(self.dist), log=self.log)
            text = {"text_cache": cache}
            self.text_mode = f"cached frozen-tower features ({cache.directory})"
        else:
            text = {"tokenizer": tokenizer}
            self.text_mode = "tokenized in the workers"
        self.fetcher = PinFeatureFetcher(self.graph.features, transform, self.model.image_size, **text, **images)
        self.eval_fetcher = PinFeatureFetcher(self.graph.features, eval_transform, self.model.image_size, **text,
                                              **images)

    def _build_sampler(self) -> None:
        """The neighbor-pair sampler (None when the model uses no neighbors), built by
        ``sampling.build_sampler`` from the ``sampler`` section: on the training graph (train-split
        edges only), negatives from the train pins only, none at all without
        ``loss.use_negatives``."""
        self.sampler = None
        if self.uses_neighbors:
            self.train_graph = self.graph.train_graph()
            self.sampler = build_sampler(sampler_config(self.cfg), self.train_graph, negative_pool=self.seeds,
                                         use_negatives=bool(self.cfg.loss.use_negatives))

    def _build_loader(self) -> None:
        cfg, s = self.cfg, self.cfg.sampler
        self.dataset = TrainBatchDataset(self.sampler, self.batches, self.fetcher, seed=s.seed,
                                         hard_curriculum=s.pairs.hard_curriculum, use_negatives=cfg.loss.use_negatives)
        self.loader = TrainLoader(self.dataset, cfg.data.num_workers, cfg.data.prefetch_factor,
                                  pin_memory=self.device.type == "cuda")

    def _image_policy(self) -> dict[str, Any]:
        """PinFeatureFetcher keywords of the image checks (``data.on_bad_image``,
        ``data.max_image_pixels``)."""
        d = self.cfg.data
        return {"on_bad_image": str(d.on_bad_image), "max_image_pixels": int(d.max_image_pixels)}

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

    def _begin(self, resume_state: dict[str, Any] | None) -> None:
        """Cut a resumed run's logs back to its checkpoint and restore its RNG states (last, so
        nothing in the start-up draws from them afterwards); log the start."""
        if self.resume and resume_state is None:
            self.log(f"{self.run_dir}: no checkpoint yet; starting again from step 0")
            self._cut_logs(0)
        elif self.resume:
            self._cut_logs(self.step)
            self.events.write({"step": self.step, "event": "resume", "checkpoint": resume_state["path"]})
            self.log(f"resumed from {resume_state['path']} at step {self.step}")
        elif self.dist.is_main:
            self.events.write({"step": 0, "event": "start", "world_size": self.dist.world_size})
        cfg, t, s = self.cfg, self.cfg.train, self.cfg.sampler
        n_params = sum(p.numel() for p in self.params)
        self.log(f"run {self.run_dir}: device {self.device}, {self.dist.world_size} rank(s); {self.graph.num_pins} pins "
                 f"({self.seeds.numel()} train pins, {self.graph.num_pins - self.seeds.numel()} cold-start); "
                 f"{len(self.loader)} batches of {t.batch_size} seeds per epoch per rank; model "
                 f"{self.model_config.name} ({n_params / 1e6:.2f} M trainable parameters), precision "
                 f"{cfg.model.precision}; text {self.text_mode}; neighbors "
                 f"{'K=%d per seed' % s.pairs.num_positives if self.uses_neighbors else 'off'}; "
                 f"{cfg.data.num_workers} data workers")
        if resume_state is not None:
            _restore_rng(resume_state["rng"], self.device)

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

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "model": model_state(self.model), "frozen_sha256": self.frozen_sha256,
                "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "loader": all_gather_object(self.loader.state_dict(), self.dist),
                "rng": all_gather_object(_capture_rng(self.device), self.dist),
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

    # ------------------------------------------------------------------ steps
    def train_step(self, batch: Any) -> dict[str, Any]:
        """One optimizer step on ``batch`` (already on the device). Returns floats: the loss
        terms (mean over ranks), ``grad_norm``, ``lr`` and ``skipped`` (0/1)."""
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        terms = step_mod.compute_gradients(self.model, self.loss_fn, batch, self.cfg.train.accum_freq,
                                           self.cfg.model.precision, bool(self.cfg.loss.duplicate_text_positives))
        average_gradients(self.params, self.dist)
        names = sorted(terms)
        values = all_reduce_mean(torch.stack([terms[n].float() for n in names]), self.dist).tolist()
        out = dict(zip(names, values))
        clip = float(self.cfg.optim.grad_clip)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip if clip > 0 else float("inf")))
        lr = self.optimizer.param_groups[0]["lr"]
        finite = math.isfinite(out["loss"]) and math.isfinite(grad_norm)
        if finite:
            try:
                self.optimizer.step()
            except RuntimeError as exc:
                # An lr near the float32 range (>= ~3e37) fails inside AdamW converting its step
                # size, with a message naming no key.
                if "overflow" not in str(exc):
                    raise
                raise TrainingError(f"stopped at step {self.step + 1}: the optimizer step overflowed float32 "
                                    f"(lr {lr:g}, optim.lr={self.cfg.optim.lr}: {exc}); lower optim.lr") from None
            self._check_parameters_finite(lr)
            self.nonfinite["consecutive"] = 0
        else:
            self.nonfinite["consecutive"] += 1
            self.nonfinite["total"] += 1
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        out.update(grad_norm=grad_norm, lr=lr, skipped=0 if finite else 1)
        return out

    def _check_parameters_finite(self, lr: float) -> None:
        """TrainingError when the optimizer step just taken left a trainable parameter NaN or
        infinite (e.g. optim.lr far too large): every later step and checkpoint would carry it,
        and the loss guard only sees it a step later, if at all. One device sync per step: the
        max-abs (inf) norm of every tensor in one multi-tensor kernel is NaN or inf exactly when
        the tensor holds one (unlike the 2-norm, it cannot overflow on large finite values)."""
        if not self.params:
            return
        with torch.no_grad():
            finite = torch.stack(torch._foreach_norm(self.params, float("inf"))).isfinite()
        if bool(finite.all()):
            return
        step = self.step + 1           # the step being taken (self.step counts finished steps)
        name = self.param_names[int(torch.nonzero(~finite)[0])]
        count = int((~finite).sum())
        self.events.write({"step": step, "event": "nonfinite_parameters", "parameter": name, "count": count})
        last = latest_checkpoint(self.run_dir)
        others = f" and {count - 1} other(s)" if count > 1 else ""
        raise TrainingError(
            f"stopped at step {step}: parameter {name!r}{others} became NaN or infinite in the optimizer step "
            f"(lr {lr:g}, optim.lr={self.cfg.optim.lr}); these weights were not checkpointed. "
            + (f"The last good checkpoint is {last}. " if last else "No checkpoint was written yet. ")
            + "Try a lower optim.lr, a stricter optim.grad_clip or model.precision=fp32.")

    def _on_skip(self, step: int, out: dict) -> None:
        reason = "non-finite loss" if not math.isfinite(out["loss"]) else "non-finite gradient norm"
        self.events.write({"step": step, "event": "skipped_step", "reason": reason, "loss": str(out["loss"]),
                           "grad_norm": str(out["grad_norm"])})
        self.log(f"step {step}: skipped ({reason}: loss {out['loss']}, grad norm {out['grad_norm']}); "
                 f"{self.nonfinite['consecutive']} in a row")
        limit = int(self.cfg.train.max_nonfinite_steps)
        if self.nonfinite["consecutive"] >= limit:
            raise TrainingError(
                f"stopped at step {step}: {self.nonfinite['consecutive']} consecutive steps had a {reason} "
                f"(train.max_nonfinite_steps={limit}); the last good checkpoint is in {self.run_dir / 'checkpoints'}. "
                "Try a lower optim.lr, a stricter optim.grad_clip, model.precision=fp32, or check the data.")

    def evaluate(self) -> dict[str, float] | None:
        """The quick retrieval metrics (``training.evaluation.quick_eval``) on the main rank."""

        result = None
        if self.dist.is_main:
            t0 = time.perf_counter()
            e = self.cfg.eval
            pins = torch.arange(self.graph.num_pins)
            emb = encode_pins(self.model, self.eval_fetcher, pins, batch_size=e.batch_size, device=self.device,
                              precision=self.cfg.model.precision, num_workers=self.cfg.data.num_workers)
            result = quick_eval(self.graph, emb, k=e.k, max_queries=e.max_queries, seed=self.cfg.train.seed)
            result = {"step": self.step, **result, "eval_s": round(time.perf_counter() - t0, 3)}
            self.eval_log.write(result)
            self.tb.scalars(self.step, result, "eval/")
            shown = ", ".join(f"{k} {'n/a' if v is None else format(v, '.3f')}" for k, v in result.items() if "@" in k)
            self.log(f"eval at step {self.step}: {shown}")
        barrier(self.dist)
        return result

    # ------------------------------------------------------------------ loop
    def train(self, stop_after: int | None = None) -> dict[str, Any]:
        """Train up to ``train.max_steps``; returns the summary (also in ``RUN_DIR/summary.json``).
        Releases the run directory's lock when it returns or raises (:meth:`close`).

        stop_after: stop after that step as if interrupted (no final checkpoint or evaluation;
        resume the run later). The schedule still runs to ``train.max_steps``."""
        try:
            return self._train(stop_after)
        finally:
            self.close()

    def _train(self, stop_after: int | None) -> dict[str, Any]:
        cfg, t, main = self.cfg, self.cfg.train, self.dist.is_main
        self.tb = TensorBoardLog(self.run_dir / "tensorboard", enabled=main and t.tensorboard,
                                 purge_step=self.step + 1 if self.step else None)
        if main and t.tensorboard and not self.tb.available:
            self.log(f"TensorBoard: off ({self.tb.reason}); metrics.jsonl has everything")
        if self.step >= t.max_steps:
            self.log(f"the run is already at step {self.step} = train.max_steps; raise it to train further "
                     f"(pinclip train --resume {self.run_dir} train.max_steps=N)")
            return json.loads((self.run_dir / "summary.json").read_text()) if main and \
                (self.run_dir / "summary.json").is_file() else {"steps": self.step}
        bar = ProgressBar(t.max_steps, self.step, enabled=main and t.progress)
        seeds_per_step = t.batch_size * self.dist.world_size
        window = {"steps": 0, "wait": 0.0, "compute": 0.0, "sample": 0.0, "fetch": 0.0, "rows": 0}
        total = {"wait": 0.0, "compute": 0.0, "steps": 0}
        run_t0 = time.perf_counter()
        last_eval = None
        it = iter(self.loader)
        try:
            while self.step < t.max_steps:
                t0 = time.perf_counter()
                batch = next(it).to(self.device, non_blocking=True)
                t1 = time.perf_counter()
                out = self.train_step(batch)
                t2 = time.perf_counter()
                self.step += 1
                for callback in self.callbacks:
                    callback(self.step, out)
                self.samples_seen += seeds_per_step
                for k, v in (("wait", t1 - t0), ("compute", t2 - t1), ("sample", batch.sample_s),
                             ("fetch", batch.fetch_s), ("rows", batch.num_rows)):
                    window[k] += v
                window["steps"] += 1
                total["wait"] += t1 - t0
                total["compute"] += t2 - t1
                total["steps"] += 1
                busy = (t2 - t0) or 1e-9
                bar.update(1, out, seeds_per_step / busy, (t1 - t0) / busy)
                if self.step % t.log_every == 0 or self.step == t.max_steps:
                    n = window["steps"]
                    span = window["wait"] + window["compute"]
                    rec = {"step": self.step, **{k: v for k, v in out.items() if k not in ("lr", "grad_norm", "skipped")},
                           "lr": out["lr"], "grad_norm": out["grad_norm"], "skipped": out["skipped"],
                           "epoch": batch.epoch, "samples": self.samples_seen,
                           "samples_per_s": seeds_per_step * n / span if span else 0.0,
                           "rows_per_step": window["rows"] / n, "data_wait_s": window["wait"] / n,
                           "compute_s": window["compute"] / n,
                           "data_wait_share": window["wait"] / span if span else 0.0,
                           "worker_sample_s": window["sample"] / n, "worker_fetch_s": window["fetch"] / n}
                    self.metrics.write(rec)
                    self.tb.scalars(self.step, rec)
                    window = {k: 0 if k in ("steps", "rows") else 0.0 for k in window}
                if out["skipped"]:
                    self._on_skip(self.step, out)  # after the metrics line: it shows the skip too
                if cfg.eval.every_n_steps and self.step % cfg.eval.every_n_steps == 0:
                    last_eval = self.evaluate()
                if self.step % t.checkpoint_every == 0 or self.step == t.max_steps:
                    self.save()
                if stop_after is not None and self.step >= stop_after:
                    break
            if self.step >= t.max_steps and cfg.eval.at_end and not (cfg.eval.every_n_steps and self.step % cfg.eval.every_n_steps == 0):
                last_eval = self.evaluate()
        finally:
            bar.close()
            del it
            self.metrics.close()
            self.tb.close()
        span = total["wait"] + total["compute"]
        digests = all_gather_object(parameter_digest(self.model), self.dist)
        summary = {"steps": self.step, "steps_this_process": total["steps"],
                   "seconds": round(time.perf_counter() - run_t0, 3),
                   "samples_per_s": seeds_per_step * total["steps"] / span if span else 0.0,
                   "data_wait_share": total["wait"] / span if span else 0.0,
                   "skipped_steps": self.nonfinite["total"], "world_size": self.dist.world_size,
                   "param_sha256": digests, "eval": last_eval}
        if main:
            atomic_write_bytes(self.run_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
            self.events.write({"step": self.step, "event": "end"})
            self.events.close()
            self.eval_log.close()
            self.log(f"done: {self.step} steps; {summary['samples_per_s']:.1f} samples/s, data wait "
                     f"{100 * summary['data_wait_share']:.1f}% of step time")
        return summary


def train_or_resume(config: Any, run_dir: str | os.PathLike, overrides: list[str] | tuple = (),
                    callbacks: Iterable[Callable[[int, dict], Any]] = (), log=print) -> dict[str, Any]:
    """Train ``config`` (a path, shipped name or dict) with ``overrides`` into ``run_dir``; when
    ``run_dir`` already holds a run, continue it from its saved config instead (``config`` and
    ``overrides`` are not applied again), or reuse it untouched when its ``summary.json`` says it
    reached ``train.max_steps``. Returns the run summary. Used by ``pinclip demo`` and notebooks."""
    run_dir = Path(run_dir)
    if (run_dir / "config.yaml").is_file():
        # Only max_steps is read here; the Trainer checks the config (devices included) itself.
        cfg = load_train_config(run_dir / "config.yaml", check_devices=False)
        summary_path = run_dir / "summary.json"
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
            if int(summary.get("steps", -1)) >= int(cfg.train.max_steps):
                log(f"{run_dir} is complete (step {summary['steps']}): reused")
                return summary
        log(f"resuming {run_dir}")
        trainer = Trainer(None, run_dir, resume=True, callbacks=callbacks)
    else:
        trainer = Trainer(load_train_config(config, list(overrides)), run_dir, callbacks=callbacks)
    try:
        return trainer.train()
    finally:
        trainer.close()
        shutdown(trainer.dist)
