"""bench/lora.py runs end to end on a tiny model (no timing assertions: the machine is shared)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT.parent / "shared" / "data").is_dir() and not (ROOT / "data" / "instruction-data.json").exists(),
                    reason="needs chapter 7's instruction data (../shared/data or data/) and no download in tests")
def test_bench_lora_tiny():
    out = subprocess.run([sys.executable, "bench/lora.py", "--sizes", "tiny", "--steps", "1"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LoRA vs full:" in out.stdout and "faster per step" in out.stdout and "training state" in out.stdout
    full = next(line for line in out.stdout.splitlines() if line.startswith("full "))
    lora = next(line for line in out.stdout.splitlines() if line.startswith("LoRA "))
    assert int(lora.split()[1].replace(",", "")) < int(full.split()[1].replace(",", ""))  # fewer trainable
