"""What a Qwen2-VL-2B costs in the training loop, measured where it can be on a CPU.

    python benchmarks/vlm_memory.py [--layers 2] [--batch 4] [--text-tokens 40] [--rank 16] [--device cpu|cuda]
                                    [--out FILE.json]

1. Parameters (exact, from the architecture on the ``meta`` device, no weights read): the
   Qwen2-VL-2B base model (vision encoder + language model, tied embeddings, no LM head), and
   the LoRA adapters of rank r on every linear layer of the language model's blocks (what
   ``vlm.lora.rank=r`` trains) or on q_proj / v_proj only.
2. Activation bytes the backward pass keeps, per token per language-model layer, measured with
   ``torch.autograd.graph.saved_tensors_hooks`` on a model of the real widths (hidden 1536, MLP
   8960, 12 heads, 2 KV heads; vision 32 x 1280 cut to one block) but only ``--layers`` LM
   layers, bf16 autocast on the CPU, adapters of rank ``--rank`` on every LM linear, the frozen
   vision encoder run without autograd, the prompt of ``pinclip.vlm`` at 224 px (64 image
   tokens) plus ``--text-tokens`` caption tokens. Saved tensors are counted once per storage.
   Done with and without gradient checkpointing, at 1 and ``--layers`` LM layers and at
   ``--batch`` and twice that: the differences give the bytes per token per layer (activations)
   and the bytes per layer whatever the batch (``bytes_per_layer_fixed``: the bf16 copies of
   the frozen weights that autocast makes and the backward keeps), free of the fixed cost
   (embeddings, the vision output).

On ``--device cuda`` the same runs also record the peak allocated GPU memory of each
(``peak_memory``: ``torch.cuda.max_memory_allocated`` over the forward and backward, bytes).
The JSON holds every number; docs/SCALING.md turns them into peak GPU memory at a batch size.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QWEN2_VL_2B_TEXT = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                        num_attention_heads=12, num_key_value_heads=2, max_position_embeddings=32768,
                        tie_word_embeddings=True,
                        rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                         "rope_theta": 1000000.0})
QWEN2_VL_2B_VISION = dict(depth=32, embed_dim=1280, hidden_size=1536, mlp_ratio=4, num_heads=16, in_channels=3,
                          patch_size=14, spatial_merge_size=2, temporal_patch_size=2)
IMAGE_PAD, VISION_START, VISION_END = 151655, 151652, 151653


def _config(text: dict, vision: dict):
    from transformers import Qwen2VLConfig
    return Qwen2VLConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_PAD,
                         vision_start_token_id=VISION_START, vision_end_token_id=VISION_END)


def parameter_counts(rank: int) -> dict:
    from transformers import Qwen2VLModel
    with torch.device("meta"):
        model = Qwen2VLModel(_config(QWEN2_VL_2B_TEXT, QWEN2_VL_2B_VISION))

    def lora(modules, names=None):
        return sum((m.in_features + m.out_features) * rank for block in modules for n, m in block.named_modules()
                   if isinstance(m, nn.Linear) and (names is None or n.rsplit(".", 1)[-1] in names))
    return {"total": sum(p.numel() for p in model.parameters()),
            "vision": sum(p.numel() for p in model.visual.parameters()),
            "language_model": sum(p.numel() for p in model.language_model.parameters()),
            "token_embedding": model.language_model.embed_tokens.weight.numel(),
            "lm_layers": len(model.language_model.layers), "rank": rank,
            "lora_lm_all_linear": lora(model.language_model.layers),
            "lora_lm_q_v": lora(model.language_model.layers, {"q_proj", "v_proj"}),
            "lora_vision_all_linear": lora(model.visual.blocks)}


def _saved_bytes(model, inputs: dict, device: torch.device) -> int:
    seen: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = model(**inputs).last_hidden_state[:, -1]
    out.float().sum().backward()
    return sum(seen.values())


def activation_bytes(layers: int, batch: int, text_tokens: int, rank: int, checkpointing: bool,
                     device: torch.device) -> dict:
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import Qwen2VLModel

    from pinclip.hf_towers import qwen_patchify
    text = {**QWEN2_VL_2B_TEXT, "num_hidden_layers": layers, "vocab_size": 151936}
    vision = {**QWEN2_VL_2B_VISION, "depth": 1}
    torch.manual_seed(0)
    model = Qwen2VLModel(_config(text, vision))
    targets = [n for n, m in model.language_model.layers.named_modules() if isinstance(m, nn.Linear)]
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=16, target_modules=targets), model.language_model.layers)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.to(device).train()
    image_tokens = (224 // 14) ** 2 // 4
    prompt = [151644] * 16 + [VISION_START] + [IMAGE_PAD] * image_tokens + [VISION_END] + [100] * text_tokens + [151645] * 5
    ids = torch.tensor([prompt] * batch)
    flat, grid = qwen_patchify(torch.randn(batch, 3, 224, 224), 14, 2, 2)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": flat, "image_grid_thw": grid,
              "mm_token_type_ids": (ids == IMAGE_PAD).int()}
    inputs = {k: v.to(device) for k, v in inputs.items()}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    saved = _saved_bytes(model, {**inputs, "use_cache": False}, device)
    out = {"layers": layers, "batch": batch, "tokens": len(prompt), "saved_bytes": saved}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        out["peak_bytes_above_weights"] = torch.cuda.max_memory_allocated(device) - base
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--text-tokens", type=int, default=40)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.layers < 2:
        ap.error("--layers must be >= 2 (the per-layer cost is a difference against 1 layer)")
    torch.set_num_threads(1)
    result = {"benchmark": "vlm_memory", "machine": platform.platform(), "torch": torch.__version__,
              "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
              "args": vars(args) | {"out": str(args.out)},
              "params": parameter_counts(args.rank), "activations": {}}
    for checkpointing in (False, True):
        # Saved bytes S(layers, batch) = fixed + layers * (per_layer + per_token * tokens * batch): two
        # depths and two batch sizes separate what every token costs from what every layer costs
        # whatever the batch (the bf16 copies of frozen weights autocast keeps for the backward).
        runs = {(n, b): activation_bytes(n, b, args.text_tokens, args.rank, checkpointing, device)
                for n in (1, args.layers) for b in (args.batch, 2 * args.batch)}
        tokens = runs[(1, args.batch)]["tokens"]

        def layer_cost(b, key="saved_bytes"):
            return (runs[(args.layers, b)][key] - runs[(1, b)][key]) / (args.layers - 1)
        entry = {"runs": [dict(r) for r in runs.values()], "tokens_per_sequence": tokens}
        for key, name in (("saved_bytes", ""), ("peak_bytes_above_weights", "peak_")):
            if key not in runs[(1, args.batch)]:
                continue
            per_token = (layer_cost(2 * args.batch, key) - layer_cost(args.batch, key)) / (args.batch * tokens)
            entry[f"{name}bytes_per_token_per_layer"] = per_token
            entry[f"{name}bytes_per_layer_fixed"] = layer_cost(args.batch, key) - per_token * args.batch * tokens
        result["activations"]["checkpointing" if checkpointing else "plain"] = entry
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
