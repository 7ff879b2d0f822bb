"""Notebook 07 and utils.instruct must agree: format_input, InstructionDataset and custom_collate_fn are pulled out
of the notebook (tests/nbextract.py: its imports and those definitions only) and compared with the utils versions on the same input."""

import json
import random

import pytest
import torch
from nbextract import extract

from utils import fetch, gpt2_tokenizer, instruct

NOTEBOOK = "07_instruction_finetuning.ipynb"


@pytest.fixture(scope="module")
def nb():
    return extract(NOTEBOOK, "format_input", "InstructionDataset", "custom_collate_fn")


@pytest.fixture(scope="module")
def data():
    return json.loads(fetch("instruction-data").read_text(encoding="utf-8"))


def test_format_input_agrees_on_every_entry(nb, data):
    assert all(nb["format_input"](e) == instruct.format_input(e) for e in data)


def test_instruction_dataset_agrees(nb, data):
    tokenizer = gpt2_tokenizer()
    ours, theirs = nb["InstructionDataset"](data[:100], tokenizer), instruct.InstructionDataset(data[:100], tokenizer)
    assert len(ours) == len(theirs) and [ours[i] for i in range(100)] == [theirs[i] for i in range(100)]


@pytest.mark.parametrize("allowed_max_length", [None, 3, 7, 1024])
def test_custom_collate_fn_agrees_on_seeded_batches(nb, allowed_max_length):
    rng = random.Random(123)
    for _ in range(20):
        batch = [[rng.randrange(50256) for _ in range(rng.randint(1, 12))] for _ in range(rng.randint(1, 8))]
        a = nb["custom_collate_fn"](batch, allowed_max_length=allowed_max_length)
        b = instruct.custom_collate_fn(batch, allowed_max_length=allowed_max_length)
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_split_agrees_with_the_notebooks_cell(data):
    train_portion, test_portion = int(len(data) * 0.85), int(len(data) * 0.1)
    expected = (data[:train_portion], data[train_portion:train_portion + test_portion], data[train_portion + test_portion:])
    assert instruct.split_data(data) == expected
