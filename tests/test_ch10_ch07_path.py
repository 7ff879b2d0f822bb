"""Chapter 10's other model, `MODEL = "ch07"` (the bonus's path: chapter 7's saved GPT and its Alpaca prompt), run
end to end in the quick setting: the notebook with that one setting changed, on a tiny chapter-7-shaped checkpoint in
a temporary data folder, in a fresh kernel."""

from __future__ import annotations

import os
import re
from pathlib import Path

import nbformat
import pytest
import torch

from tools.execute import execute
from utils import GPT_CONFIG_124M, GPTModel, save_checkpoint

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "10_preference_tuning.ipynb"


def test_chapter_10_tunes_a_chapter_7_checkpoint_end_to_end(tmp_path, monkeypatch):
    if not os.environ.get("LLM_ASSET_MIRROR"):
        pytest.skip("needs the preference data offline: ../shared/data beside the repository (tools/offline.py)")
    monkeypatch.setenv("LLM_DATA_DIR", str(tmp_path))  # the kernel inherits it: data/ is this folder
    monkeypatch.setenv("LLM_SMOKE", "1")
    cfg = {**GPT_CONFIG_124M, "emb_dim": 64, "n_heads": 2, "n_layers": 2, "context_length": 1024, "qkv_bias": True}
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "ch07_instruction_model.pth", GPTModel(cfg), config=cfg, source="a tiny test model")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    settings = [c for c in nb.cells if c.cell_type == "code" and 'MODEL = "smollm2-135m"' in c.source]
    assert len(settings) == 1, "the settings cell no longer sets MODEL = \"smollm2-135m\""
    settings[0].source = settings[0].source.replace('MODEL = "smollm2-135m"', 'MODEL = "ch07"')
    execute(nb, NOTEBOOK, timeout=600)  # raises on the first cell that fails
    printed = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "| model: ch07 |" in printed and "### Response:" in printed  # chapter 7's Alpaca prompt
    assert re.search(r"DPO loss \d\.\d{4} \(ln 2 = 0\.6931 before\)", printed), printed[-2000:]
    assert "saved to data/ch10_dpo_model_smoke.pth" in printed and (tmp_path / "ch10_dpo_model_smoke.pth").is_file()
