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
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from omegaconf import DictConfig

from graph.atomic import atomic_write_bytes
from pinclip import PinCLIPLoss, create_model
from pinclip.factory import get_image_transform, get_tokenizer, get_vlm_tokenizer
from sampling import SeedBatches, build_sampler
from training import step as step_mod
from training.checkpoint import (check_graph_identity, frozen_digest, graph_identity, latest_checkpoint,
                                 read_graph_identity, restore_rng)
from training.config import (TrainConfigError, augment_config, load_train_config, resolve_model_config,
                             sampler_config)
from training.data import PinFeatureFetcher, TrainBatchDataset, TrainLoader, prepare_graph, train_pins
from training.distributed import (DistInfo, all_gather_object, all_reduce_mean, average_gradients, barrier,
                                  broadcast_parameters, init_distributed, parameter_digest, shutdown)
from training.embed import encode_pins
from training.evaluation.quick_eval import quick_eval
from training.logging_utils import ProgressBar, TensorBoardLog
from training.optim import build_optimizer, cosine_lr_lambda
from training.run_files import RunDirError, RunFilesMixin, StartupLog, TrainingError
from training.text_cache import get_text_cache

__all__ = ["Trainer", "TrainingError", "RunDirError", "build_optimizer", "cosine_lr_lambda"]


class Trainer(RunFilesMixin):
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
        self.log: Callable[[str], None] = StartupLog(enabled=self.dist.is_main)
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
        self.frozen_sha256 = frozen_digest(self.model)
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
        transform = get_image_transform(self.model, train=bool(cfg.data.augment),
                                        augment_config=augment_config(cfg.data.augmentation))
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
        text["vlm_tokenizer"] = get_vlm_tokenizer(self.model)
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
            restore_rng(resume_state["rng"], self.device)

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
            # Pins whose image was skipped as unreadable are encoded with the zero image: out of t2i.
            result = quick_eval(self.graph, emb, k=e.k, max_queries=e.max_queries, seed=self.cfg.train.seed,
                                image_missing=emb["image_missing"])
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
    summary = None
    try:
        summary = trainer.train()
        return summary
    finally:
        trainer.close()
        # After a run every rank finished, meet at a barrier before tearing the group down
        # (``shutdown``); not after an error, where another rank may never come.
        shutdown(trainer.dist, synchronize=summary is not None)
