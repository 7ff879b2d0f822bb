"""Training throughput of utils.pretrain with 1 process and with N processes (torchrun), side by side in one run.

    python bench/pretrain_processes.py                 # tiny model, the series' texts, 2 processes, 3 rounds
    python bench/pretrain_processes.py --model small --nproc 4 --rounds 2

Every configuration takes the same steps on the same windows (global batch = processes x per-process batch), and
the rounds alternate the configurations so that load from other programs hits all of them. Prints the median
tokens/s of each (the run's time: one evaluation of one batch, after step 0, is included) and the ratios to one
process.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_once(nproc: int, threads: int, batch: int, args, token_path: Path, out: Path) -> float:
    """tokens/s over all processes of one `utils.pretrain` run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    f"--nproc_per_node={nproc}"]
    command = [*launcher, "-m", "utils.pretrain", "--data", str(token_path), "--out", str(out), "--model", args.model,
               "--context-length", str(args.context_length), "--batch-size", str(batch), "--max-steps",
               str(args.steps), "--eval-every", str(args.steps), "--eval-batches", "1", "--prompt", "", "--no-progress"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    found = re.findall(r"([\d,]+) tokens/s over all processes", done.stdout)
    return float(found[-1].replace(",", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=None, help="text file/folder (default: the series' texts)")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--context-length", type=int, default=128)
    parser.add_argument("--global-batch", type=int, default=16, help="windows per step over all processes")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from tools.offline import use_shared_data

    use_shared_data()  # offline tiktoken cache and asset mirror when ../shared is there
    from utils.assets import data_dir
    from utils.corpus import build_token_file, write_series_corpus

    data = args.data or write_series_corpus(data_dir() / "series-corpus")
    work = Path(tempfile.mkdtemp(prefix="bench-pretrain-"))
    token_path = build_token_file(data, work / "tokens.bin", progress=False).path
    cores = os.cpu_count()
    configs = {  # name: (processes, threads per process)
        f"1 process x {cores} threads": (1, cores),
        "1 process x 1 thread": (1, 1),
        f"{args.nproc} processes x 1 thread": (args.nproc, 1),
    }
    results = {name: [] for name in configs}
    for r in range(args.rounds):
        for name, (nproc, threads) in configs.items():
            speed = run_once(nproc, threads, args.global_batch // nproc, args, token_path, work / f"run{r}-{nproc}-{threads}")
            results[name].append(speed)
            print(f"round {r + 1}: {name:28s} {speed:10,.0f} tokens/s", flush=True)
    base = statistics.median(results[f"1 process x {cores} threads"])
    print(f"\nmodel {args.model}, context {args.context_length}, global batch {args.global_batch}, {args.steps} steps, "
          f"{cores} CPU cores, medians of {args.rounds} rounds:")
    for name, speeds in results.items():
        median = statistics.median(speeds)
        print(f"  {name:28s} {median:10,.0f} tokens/s  ({median / base:.2f}x the first)")


if __name__ == "__main__":
    main()
