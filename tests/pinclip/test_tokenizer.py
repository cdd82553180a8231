"""The tokenizer wrapper, offline, on the packaged all-MiniLM-L6-v2 vocabulary."""
import pytest
import torch

from pinclip.config import ConfigError
from pinclip.factory import get_tokenizer
from pinclip.tokenizer import HFTokenizer

from .conftest import tiny_config


def test_minilm_tokenizer_pads_to_context_length():
    tok = HFTokenizer("builtin:all-MiniLM-L6-v2", context_length=8)
    enc = tok(["hello world", None, "one two three four five six seven eight nine"])
    assert enc["input_ids"].shape == (3, 8) and enc["input_ids"].dtype == torch.long
    assert enc["attention_mask"].tolist()[0] == [1, 1, 1, 1, 0, 0, 0, 0]  # [CLS] hello world [SEP]
    assert enc["attention_mask"][1].sum() == 2 and enc["attention_mask"][2].sum() == 8
    assert tok("single")["input_ids"].shape == (1, 8)
    longest = HFTokenizer("builtin:all-MiniLM-L6-v2", context_length=8, padding="longest")
    assert longest(["a", "a b"])["input_ids"].shape == (2, 4)


def test_scratch_text_uses_minilm_vocabulary_and_checks_its_size():
    tok = get_tokenizer(tiny_config())
    assert tok.vocab_size == 30522 and tok.context_length == 12
    with pytest.raises(ConfigError, match="text.vocab_size"):
        get_tokenizer(tiny_config(text={"vocab_size": 1000}))
