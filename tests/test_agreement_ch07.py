"""Notebook 07 and utils.instruct must agree: format_input, InstructionDataset and custom_collate_fn are pulled out
of the notebook's cells (the definition only, via ast) and compared with the utils versions on the same input."""

import ast
import json
import random
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from utils import fetch, gpt2_tokenizer, instruct

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "07_instruction_finetuning.ipynb"


def notebook_definitions(*names):
    """Exec the notebook's `def`/`class` of each name (in notebook order) in one namespace and return it."""
    cells = json.loads(NOTEBOOK.read_text(encoding="utf-8"))["cells"]
    namespace = {"torch": torch, "Dataset": Dataset}
    found = set()
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        lines = [line for line in source.split("\n") if not line.startswith(("%", "!"))]
        tree = ast.parse("\n".join(lines))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names and node.name not in found:
                exec(compile(ast.Module([node], type_ignores=[]), str(NOTEBOOK), "exec"), namespace)
                found.add(node.name)
    missing = set(names) - found
    assert not missing, f"the notebook no longer defines {sorted(missing)}"
    return namespace


@pytest.fixture(scope="module")
def nb():
    return notebook_definitions("format_input", "InstructionDataset", "custom_collate_fn")


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
