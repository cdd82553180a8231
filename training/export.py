"""A training run's model as a self-contained model directory: ``pinclip export RUN_DIR --out DIR``.

The model of a checkpoint (default: the newest) is written with ``pinclip.save_pretrained`` into
``DIR`` atomically (``graph.atomic.atomic_directory``; ``DIR`` may be missing, empty or a previous
export, anything else is refused). The directory needs neither the run nor this package:
``pinclip.load(DIR)`` gives a :class:`pinclip.PinEncoder` whose ``encode_image`` /
``encode_text`` / ``encode_pins`` equal ``pinclip embed`` of the run (same transform, same text
feature precision, same autocast precision). ``README.md`` is a model card: the run's data, its
training config, the step and the run's evaluation metrics (``RUN_DIR/evaluation.json``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from graph.atomic import atomic_directory
from graph.output_dir import OutputKind, check_output_dir
from pinclip.lora import merge_lora
from pinclip.pretrained import MODEL_FORMAT, save_pretrained
from training.embed import load_run_model

__all__ = ["MODEL_OUTPUT", "export_run", "model_card"]

MODEL_OUTPUT = OutputKind("an exported model", "pinclip export", "manifest.json", "format", MODEL_FORMAT)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _graph_counts(cfg: Any, run_dir: Path) -> dict | None:
    """{"num_pins", "num_boards", "num_edges", "path"} of the run's graph store, when readable."""
    path = Path(cfg.data.graph).expanduser() if cfg.data.graph else run_dir / "graph"
    manifest = _read_json(path / "manifest.json")
    if not isinstance(manifest, dict):
        return None
    try:
        counts = {k: int(manifest[k]) for k in ("num_pins", "num_boards", "num_edges")}
    except (KeyError, TypeError, ValueError):
        return None
    return {**counts, "path": str(path)}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def model_card(model: Any, cfg: Any, run_dir: Path, step: int, checkpoint: str) -> str:
    """The README.md of an exported model (markdown)."""
    mc = model.config
    lines = [f"# PinCLIP model `{mc.name}` (step {step})", ""]
    if mc.description:
        lines += [mc.description, ""]
    lines += [f"Exported by `pinclip export` from the training run `{run_dir}` at step {step} "
              f"(checkpoint `{Path(checkpoint).name}`).", "",
              f"Image, text and fused (pin) embeddings: {mc.embed_dim} dimensions, L2-normalized"
              + (f"; Matryoshka prefixes {list(mc.matryoshka_dims)} (`dim=`)" if mc.matryoshka_dims else "") + ".",
              "", "## Data", ""]
    counts = _graph_counts(cfg, run_dir)
    source = cfg.data.graph or cfg.data.dataset
    if counts:
        lines.append(f"Graph store `{counts['path']}` (from `{source}`): {counts['num_pins']:,} pins, "
                     f"{counts['num_boards']:,} boards, {counts['num_edges']:,} pin-board edges.")
    else:
        lines.append(f"Data: `{source}` (graph store not readable at export time).")
    lo = mc.loss
    neighbors = cfg.loss.neighbor_weight != 0
    sampler = (f"PinSage importance walks ({cfg.sampler.pinsage.num_random_walks} walks, "
               f"{cfg.sampler.pinsage.num_neighbors} neighbors) -> neighbor pairs "
               f"({cfg.sampler.pairs.num_positives} positives, {cfg.sampler.pairs.num_negatives} negatives)"
               if neighbors else "none (CLIP-only: no neighbor terms)")
    losses = [f"image-text `{lo.image_text}` x {lo.image_text_weight}"]
    if neighbors:
        losses += [f"neighbor fused x {lo.neighbor_fused_weight}", f"neighbor image x {lo.neighbor_image_weight}",
                   f"neighbor cross-modal x {lo.neighbor_cross_modal_weight if lo.cross_modal else 0}",
                   f"neighbor image-image x {lo.neighbor_image_image_weight}"]
    v, t = mc.vision, mc.text
    vision = f"{v.type}" + (f" {v.image_size} px, patch {v.patch_size}, width {v.width}, {v.layers} layers"
                            if v.type == "vit" else f" from `{v.pretrained}`") + f", {v.freeze}"
    text = (f"{t.type}" + (f" `{t.pretrained}`" if t.type == "hf" else f" width {t.width}, {t.layers} layers")
            + f", {t.freeze}")
    lines += ["", "## Training", "", "| | |", "| --- | --- |",
              f"| model | `{cfg.model.name}`" + (f" ({mc.name})" if mc.name != cfg.model.name else "") + " |",
              f"| image tower | {vision} |", f"| text tower | {text} |",
              f"| sampler | {sampler} |", f"| steps | {step} of {cfg.train.max_steps} |",
              f"| batch size | {cfg.train.batch_size} seed pins (x {cfg.train.accum_freq} accumulation) |",
              f"| losses | {', '.join(losses)} |", f"| optimizer | AdamW, lr {cfg.optim.lr}, {cfg.optim.schedule} |",
              f"| precision | {cfg.model.precision} |"]
    evaluation = _read_json(run_dir / "evaluation.json")
    if isinstance(evaluation, dict) and isinstance(evaluation.get("metrics"), dict):
        ev_step = evaluation.get("step")
        note = "" if ev_step in (None, step) else f" (evaluated at step {ev_step}, not the exported step)"
        lines += ["", "## Evaluation", "", f"From `{run_dir / 'evaluation.json'}`{note}.", "",
                  "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {_fmt(val)} |" for k, val in evaluation["metrics"].items()
                  if isinstance(val, (int, float)) or val is None]
    lines += ["", "## Use", "", "```python", "import pinclip", "", 'enc = pinclip.load("THIS_DIR")   '
              "# checks every file's sha256; safetensors + JSON only",
              'img = enc.encode_image(["pin.jpg"])                  # float32 [N, D], L2-normalized',
              'txt = enc.encode_text(["a caption"])',
              'pin = enc.encode_pins(images=["pin.jpg", None], texts=[None, "a caption"])   # fused',
              "```", ""]
    return "\n".join(lines)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, checkpoint: str | os.PathLike | None = None,
               device: str = "cpu") -> Path:
    """Write the model of a run's checkpoint (default: the newest) as a model directory ``out``.
    Returns ``out``. Raises ``OutputDirError`` when ``out`` holds something other than a
    previous export, ``MissingInputError`` / ``CheckpointError`` for a bad run or checkpoint."""
    run_dir = Path(run_dir)
    out = Path(out)
    check_output_dir(out, MODEL_OUTPUT)   # before loading anything; atomic_directory checks again
    model, cfg, state = load_run_model(run_dir, checkpoint, device)
    model = model.cpu()
    step = int(state["step"])
    # The run's text cache stores a frozen tower's token features in float16 and `pinclip embed`
    # reads them; without the cache (text_cache=off) the tower runs in full precision.
    text_dtype = "float16" if (cfg.data.text_cache == "auto" and model.text.frozen) else None
    extra = {"run_dir": str(run_dir.absolute()), "checkpoint": str(state["_path"]), "step": step,
             "train_model": cfg.model.name}
    card = model_card(model, cfg, run_dir.absolute(), step, str(state["_path"]))
    # This model is ours (loaded above): merge LoRA adapters into it rather than into the copy
    # save_pretrained would make, which would double a VLM's memory.
    model = merge_lora(model, in_place=True)
    with atomic_directory(out, MODEL_OUTPUT) as tmp:
        save_pretrained(model, tmp, card=card, extra_manifest=extra, text_features_dtype=text_dtype,
                        precision=str(cfg.model.precision))
    return out
