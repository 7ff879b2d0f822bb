"""Chapter 2 data pipeline: sliding-window (input, target) pairs over token ids."""

from __future__ import annotations

import numbers

import torch
from torch.utils.data import DataLoader, Dataset

from .tokenizer import gpt2_tokenizer


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


class GPTDatasetV1(Dataset):
    """Windows of `max_length` token ids every `stride` tokens; targets are inputs shifted by one.

    Each item is `(input_ids, target_ids)`, both of shape `(max_length,)`.
    """

    def __init__(self, txt: str, tokenizer, max_length: int, stride: int):
        if not isinstance(txt, str):
            raise TypeError(f"txt must be a str (the training text), got {type(txt).__name__}")
        if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer must have an encode method (e.g. gpt2_tokenizer()), got {type(tokenizer).__name__}")
        if not _is_int(max_length) or max_length <= 0:
            raise ValueError(f"max_length must be a positive number of tokens, got {max_length!r}: use e.g. max_length=256")
        if not _is_int(stride) or stride <= 0:
            raise ValueError(f"stride must be a positive number of tokens, got {stride!r}: use e.g. stride=max_length")
        token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
        if len(token_ids) < max_length + 1:
            raise ValueError(
                f"the text has {len(token_ids)} tokens, too short for one window of max_length={max_length} "
                f"(needs max_length + 1 = {max_length + 1}): use a longer text or a smaller max_length"
            )
        self.input_ids = []
        self.target_ids = []
        for i in range(0, len(token_ids) - max_length, stride):
            self.input_ids.append(torch.tensor(token_ids[i : i + max_length]))
            self.target_ids.append(torch.tensor(token_ids[i + 1 : i + max_length + 1]))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(
    txt: str,
    batch_size: int = 4,
    max_length: int = 256,
    stride: int = 128,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    tokenizer=None,
) -> DataLoader:
    """A DataLoader of `(inputs, targets)` batches, each `(batch_size, max_length)` token ids (GPT-2 BPE)."""
    if not _is_int(batch_size) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size!r}")
    if not _is_int(num_workers) or num_workers < 0:
        raise ValueError(f"num_workers must be a whole number >= 0 (0 loads in this process), got {num_workers!r}")
    for name, value in (("shuffle", shuffle), ("drop_last", drop_last)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    dataset = GPTDatasetV1(txt, tokenizer or gpt2_tokenizer(), max_length, stride)
    if drop_last and len(dataset) < batch_size:
        raise ValueError(
            f"the text gives only {len(dataset)} windows (max_length={max_length}, stride={stride}), fewer than "
            f"batch_size={batch_size}, so drop_last=True would leave an empty loader: "
            "lower batch_size, max_length or stride, or pass drop_last=False"
        )
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)
