"""PinCLIP model library: backbones, hybrid fusion, losses. Independent of graph and training.

    from pinclip import create_model, get_tokenizer, get_image_transform, PinCLIPLoss
    model = create_model("pinclip-tiny-demo")            # names: pinclip.list_models()
    tok = get_tokenizer(model); tf = get_image_transform(model, train=True)
    out = model(images, **tok(captions))                  # image_emb, text_emb, fused_emb [B, D]
    losses = PinCLIPLoss.from_config(model.config)(out, neighbor_out, neighbor_weights, fn_mask)
    save_pretrained(model, "model_dir"); enc = load("model_dir")   # PinEncoder: encode_image/text/pins

Modules: ``config`` (dataclasses), ``factory`` (registry), ``vit``, ``hf_towers``, ``text``,
``fusion``, ``vlm`` (the joint VLM encoder), ``model``, ``losses`` / ``neighbor_loss`` / ``distributed``, ``transforms``,
``tokenizer``, ``pretrained`` (model directories, :class:`PinEncoder`). Nothing here imports
``graph``, ``sampling`` or ``training``.
"""
from .config import ConfigError, PinCLIPConfig
from .factory import (add_model_config, create_model, create_model_and_transforms, get_image_transform,
                      get_model_config, get_tokenizer, get_vlm_tokenizer, list_models)
from .losses import (ClipLoss, NeighborAlignmentLoss, PinCLIPLoss, SigLipLoss, clip_loss,
                     neighbor_alignment_loss, siglip_loss)
from .model import PinCLIP, autocast, truncate_embedding
from .pretrained import MODEL_FORMAT, ModelDirError, PinEncoder, is_model_dir, load, save_pretrained

__all__ = [
    "ConfigError", "PinCLIPConfig", "add_model_config", "create_model", "create_model_and_transforms",
    "get_image_transform", "get_model_config", "get_tokenizer", "get_vlm_tokenizer", "list_models", "ClipLoss",
    "NeighborAlignmentLoss", "PinCLIPLoss", "SigLipLoss", "clip_loss", "neighbor_alignment_loss",
    "siglip_loss", "PinCLIP", "autocast", "truncate_embedding", "MODEL_FORMAT", "ModelDirError", "PinEncoder",
    "is_model_dir", "load", "save_pretrained",
]
