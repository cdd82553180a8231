"""LoRA adapters (through peft) on the pretrained towers, and gradient checkpointing.

``add_lora(tower, cfg)`` injects low-rank adapters into the linear layers of a tower's blocks
(``tower.blocks()``: the transformer layers the freezing policies act on; ``cfg.target_modules``
narrows them to names ending in e.g. ``q_proj``). The tower's freezing policy still decides its
own weights (``frozen``: none train); the adapters always train, so the tower runs with autograd
and is no longer ``frozen``. The adapters are ordinary parameters of the model: checkpoints hold
them and resume restores them exactly.

``merge_lora(model)`` returns a copy (``in_place=True``: the model itself) of a PinCLIP model with every adapter merged into its base
weight (W + B A * alpha / r) and the LoRA layers replaced by plain ones, with the ``lora`` keys of
its config reset: what :func:`pinclip.pretrained.save_pretrained` writes, so a model directory
never needs peft to load.
"""
from __future__ import annotations

import copy
from typing import Any

from torch import nn

from .config import ConfigError, LoRAConfig

__all__ = ["add_lora", "has_lora", "lora_target_names", "merge_lora", "lora_parameter_count",
           "enable_gradient_checkpointing"]


def lora_target_names(tower: nn.Module, cfg: LoRAConfig, root: nn.Module) -> list[str]:
    """Full names (relative to ``root``) of the ``nn.Linear`` layers inside ``tower.blocks()``
    that get adapters: all of them, or those whose last name part is in ``cfg.target_modules``."""
    wanted = set(cfg.target_modules)
    in_blocks = {id(m) for block in tower.blocks() for m in block.modules()}
    names = [name for name, m in root.named_modules()
             if isinstance(m, nn.Linear) and id(m) in in_blocks
             and (not wanted or name.rsplit(".", 1)[-1] in wanted)]
    return names


def add_lora(tower: nn.Module, cfg: LoRAConfig, key: str) -> int:
    """Inject adapters of rank ``cfg.rank`` into ``tower.model`` (a Hugging Face model); ``key``
    names the config section in errors. Returns the number of adapted layers (0 when rank is 0)."""
    if cfg.rank == 0:
        return 0
    from peft import LoraConfig, inject_adapter_in_model
    root = tower.model
    names = lora_target_names(tower, cfg, root)
    if not names:
        raise ConfigError(f"key '{key}.target_modules' = {list(cfg.target_modules)} matches no linear layer of the "
                          f"tower's blocks (e.g. {_linear_leaf_names(tower)[:6]})")
    # Why keep requires_grad by hand: peft marks everything but the adapters as frozen, and the
    # tower's own freezing policy (train_last_n...) must still hold for its base weights.
    trainable = {name: p.requires_grad for name, p in root.named_parameters()}
    inject_adapter_in_model(LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                                       target_modules=names), root)
    for name, p in root.named_parameters():
        p.requires_grad_("lora_" in name or trainable.get(name, False))
    tower.frozen = False
    tower.lora_layers = len(names)
    return len(names)


def _linear_leaf_names(tower: nn.Module) -> list[str]:
    return sorted({name.rsplit(".", 1)[-1] for block in tower.blocks() for name, m in block.named_modules()
                   if isinstance(m, nn.Linear)})


def has_lora(module: nn.Module) -> bool:
    """True when any LoRA layer is inside ``module`` (by its adapter weights' names, so a model
    without adapters never imports peft)."""
    return any(".lora_A." in name for name, _ in module.named_parameters())


def lora_parameter_count(module: nn.Module) -> int:
    """Number of adapter weights (``lora_A`` / ``lora_B``) in ``module``."""
    return sum(p.numel() for name, p in module.named_parameters() if "lora_" in name)


def _merge_into_base(root: nn.Module) -> None:
    from peft.tuners.lora import LoraLayer
    for name, module in list(root.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = root.get_submodule(parent_name) if parent_name else root
            setattr(parent, child, module.get_base_layer())


def merge_lora(model: Any, in_place: bool = False) -> Any:
    """A copy of the PinCLIP ``model`` with every adapter merged into its base weights and no LoRA
    layer left; its config's ``lora.rank`` keys are 0. ``model`` itself is unchanged, unless
    ``in_place``: then ``model`` is merged and returned, without the copy (a model the caller
    owns, such as the one ``pinclip export`` loads: a second copy of a VLM's weights is
    gigabytes)."""
    if not has_lora(model):
        return model
    merged = model if in_place else copy.deepcopy(model)
    _merge_into_base(merged)
    for section in (merged.config.vision, merged.config.text, merged.config.vlm):
        section.lora = LoRAConfig()
    return merged


def enable_gradient_checkpointing(tower: nn.Module) -> None:
    """Recompute the tower's block activations in the backward pass instead of storing them
    (memory for about one more forward): Hugging Face models through
    ``activation_checkpointing_enable`` (non-reentrant), our transformers through their
    ``grad_checkpointing`` flag. A frozen tower without adapters stores no activations anyway."""
    model = getattr(tower, "model", None)
    if hasattr(model, "activation_checkpointing_enable"):   # transformers 5 (the old name goes in v6)
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        return
    if hasattr(model, "gradient_checkpointing_enable"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return
    transformer = getattr(tower, "transformer", None)
    if transformer is None or not hasattr(transformer, "grad_checkpointing"):
        raise ConfigError(f"{type(tower).__name__} does not support gradient checkpointing")
    transformer.grad_checkpointing = True
