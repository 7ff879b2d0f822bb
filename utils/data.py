"""Chapter 2 data pipeline: sliding-window (input, target) pairs over token ids."""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import DataLoader, Dataset

from .checks import END_OF_TEXT, is_int
from .tokenizer import gpt2_tokenizer


class GPTDatasetV1(Dataset):
    """Windows of `max_length` token ids every `stride` tokens; targets are inputs shifted by one.

    Each item is `(input_ids, target_ids)`, both of shape `(max_length,)`.
    """

    def __init__(self, txt, tokenizer, max_length, stride):
        self.input_ids, self.target_ids = [], []
        token_ids = tokenizer.encode(txt, allowed_special={END_OF_TEXT})
        if len(token_ids) <= max_length:
            raise ValueError(f"the text has {len(token_ids)} tokens, too short for one window of max_length={max_length} (needs max_length + 1 = {max_length + 1}): use a longer text or a smaller max_length")
        for name, value, example in (("max_length", max_length, "256"), ("stride", stride, "max_length")):
            if not is_int(value) or value < 1:  # 0 gives empty windows or a window that never moves
                raise ValueError(f"{name} must be a positive number of tokens, got {value!r}: use e.g. {name}={example}")
        if stride > max_length:  # the tokens between two windows would never be trained on
            warnings.warn(f"stride={stride} > max_length={max_length}: {stride - max_length} of every {stride} tokens fall between windows and are skipped; use stride <= max_length", stacklevel=2)
        for i in range(0, len(token_ids) - max_length, stride):
            input_chunk = token_ids[i : i + max_length]
            target_chunk = token_ids[i + 1 : i + max_length + 1]
            self.input_ids.append(torch.tensor(input_chunk))
            self.target_ids.append(torch.tensor(target_chunk))

    def __len__(self):
        return len(self.input_ids)

    def __getitem__(self, idx):
        return self.input_ids[idx], self.target_ids[idx]


def create_dataloader_v1(txt, batch_size=4, max_length=256, stride=128, shuffle=True, drop_last=True, num_workers=0,
                         tokenizer=None):
    """A DataLoader of `(inputs, targets)` batches, each `(batch_size, max_length)` token ids (`tokenizer`: GPT-2 BPE)."""
    tokenizer = gpt2_tokenizer() if tokenizer is None else tokenizer
    dataset = GPTDatasetV1(txt, tokenizer, max_length, stride)
    dataloader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, num_workers=num_workers)
    if len(dataloader) == 0:  # drop_last dropped the only, short batch
        raise ValueError(f"the text gives only {len(dataset)} windows (max_length={max_length}, stride={stride}), fewer than "
                         f"batch_size={batch_size}, so drop_last=True would leave an empty loader: "
                         "lower batch_size, max_length or stride, or pass drop_last=False")
    return dataloader
