"""Tiny models, loaders and a character tokenizer shared by the tests (conftest.py offers them as fixtures)."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from utils import GPT_CONFIG_124M, GPTModel

TINY = {**GPT_CONFIG_124M, "vocab_size": 100, "context_length": 16, "emb_dim": 32, "n_heads": 4, "n_layers": 2,
        "drop_rate": 0.0}


def tiny_config(**overrides):
    """A GPT config small enough to build and train in milliseconds; `overrides` replace its entries."""
    return {**TINY, **overrides}


def tiny_model(seed=0, **overrides):
    """GPTModel(tiny_config(**overrides)) with weights drawn after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return GPTModel(tiny_config(**overrides))


def token_loaders(n_train=6, batch_size=2, vocab_size=100):
    """(train, val) loaders of random token windows, inputs and targets (batch_size, 8); val holds 2 rows."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab_size, (n_train + 2, 9), generator=g)
    return (DataLoader(TensorDataset(tokens[:n_train, :-1], tokens[:n_train, 1:]), batch_size=batch_size, shuffle=True,
                       drop_last=True),
            DataLoader(TensorDataset(tokens[n_train:, :-1], tokens[n_train:, 1:]), batch_size=batch_size))


class CharTokenizer:
    """One token a character: id = ord(ch) % vocab_size; decode gives letters A-Z (enough for shape tests)."""

    def __init__(self, vocab_size=60):
        self.vocab_size = vocab_size

    def encode(self, text, allowed_special=None):
        return [ord(ch) % self.vocab_size for ch in text]

    def decode(self, ids):
        return "".join(chr(65 + i % 26) for i in ids)
