"""utils.bpe speed, measured side by side in one run on about 1 MB of English text.

1. Encode throughput (MB/s) of our BPETokenizer with GPT-2's files versus tiktoken (Rust), after checking both give
   the same ids: ours with an empty word cache (cold) and with it filled by a first pass (warm).
2. Training time of a 5,000-token vocabulary: ours (pair counts updated incrementally) versus a naive trainer that
   recounts every pair of the corpus after each merge. Both count each distinct pre-tokenized word once (with its
   frequency), so the ratio isolates the incremental update. The naive trainer is far too slow to run to 5,000
   tokens here, so it runs the first `--naive-merges` merges for real (checked to equal ours), and single merges
   from the states of the words after 0, 1/4, 1/2, 3/4 and all of the merges (each checked to pick the merge ours
   picked there); its total is extrapolated from those measured per-merge costs (trapezoid rule over the merges).

The text: The Verdict, the SMS Spam Collection's messages and the instruction data's fields (the series' offline
data sets, about 0.7 MB together), repeated until it is `--mb` MB long. Repetition adds no new words, so training
sees the same distinct words as on the 0.7 MB; encode throughput is unaffected by it apart from the warm cache.

    python bench/bpe.py            # about 1 minute on a busy 2-core CPU
    python bench/bpe.py --quick    # 0.1 MB, 1,000 tokens: a few seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the repo root, for `import utils`

from utils.bpe import BPETokenizer, pretokenize, train_merges  # noqa: E402


def build_corpus(n_chars: int) -> str:
    """The Verdict + SMS messages + instruction data, repeated (and cut) to `n_chars` characters."""
    from utils import fetch

    verdict = fetch("the-verdict").read_text(encoding="utf-8")
    sms = [line.split("\t", 1)[1] for line in fetch("sms-spam").read_text(encoding="utf-8").splitlines() if "\t" in line]
    entries = json.loads(fetch("instruction-data").read_text(encoding="utf-8"))
    instruct = [v for e in entries for v in e.values() if v]
    base = "\n\n".join([verdict, "\n".join(sms), "\n\n".join(instruct)])
    return (base * (n_chars // len(base) + 1))[:n_chars]


def train_merges_naive(word_counts: dict[bytes, int], n_merges: int, start_id: int = 256, words=None):
    """The textbook loop: after every merge, recount every pair of every word. Same tie rule as train_merges."""
    if words is None:
        words = [list(w) for w in word_counts]
    freqs = list(word_counts.values())
    merges = []
    for k in range(n_merges):
        counts: dict[tuple[int, int], int] = {}
        for w, f in zip(words, freqs):
            for pair in zip(w, w[1:]):
                counts[pair] = counts.get(pair, 0) + f
        if not counts:
            break
        pair = min(counts, key=lambda p: (-counts[p], p))  # most frequent; ties: smallest (left, right)
        merges.append(pair)
        new_id = start_id + k
        a, b = pair
        for i, w in enumerate(words):
            if len(w) < 2:
                continue
            out, j, n = [], 0, len(w)
            while j < n:
                if j < n - 1 and w[j] == a and w[j + 1] == b:
                    out.append(new_id)
                    j += 2
                else:
                    out.append(w[j])
                    j += 1
            words[i] = out
    return merges


def _median_time(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_encode(text: str, reps: int = 3) -> dict:
    """Seconds to encode `text`: ours cold, ours warm, tiktoken (alternating, medians); ids checked equal."""
    import tiktoken

    ours = BPETokenizer.from_gpt2()
    theirs = tiktoken.get_encoding("gpt2")
    start = time.perf_counter()
    ids = ours.encode_ordinary(text)  # cold: every word goes through the merge loop once
    cold = time.perf_counter() - start
    if ids != theirs.encode_ordinary(text):
        raise AssertionError("our ids differ from tiktoken's on the benchmark text")
    warm, tik = [], []
    for _ in range(reps):
        warm.append(_median_time(lambda: ours.encode_ordinary(text), 1))
        tik.append(_median_time(lambda: theirs.encode_ordinary(text), 1))
    return {"chars": len(text), "bytes": len(text.encode("utf-8")), "tokens": len(ids), "cold": cold,
            "warm": statistics.median(warm), "tiktoken": statistics.median(tik)}


def bench_train(text: str, vocab_size: int, naive_merges: int) -> dict:
    """Seconds for our trainer to reach `vocab_size` and the naive trainer's per-merge costs (start and end)."""
    start = time.perf_counter()
    counts = pretokenize(text, ("<|endoftext|>",))
    pre = time.perf_counter() - start
    n_merges = vocab_size - 257
    start = time.perf_counter()
    merges, final_words = train_merges(counts, n_merges)
    ours = time.perf_counter() - start
    if len(merges) != n_merges:
        raise ValueError(f"the text allows only {len(merges)} merges; ask for a smaller vocab_size")
    start = time.perf_counter()
    ours_first, _ = train_merges(counts, naive_merges)
    ours_first_t = time.perf_counter() - start
    start = time.perf_counter()
    naive_first = train_merges_naive(counts, naive_merges)
    naive_first_t = time.perf_counter() - start
    if naive_first != merges[:naive_merges] or ours_first != merges[:naive_merges]:
        raise AssertionError("the naive trainer's merges differ from ours")
    per_merge = {}  # merges done -> seconds for one naive merge from that state
    for k in sorted({0, n_merges // 4, n_merges // 2, 3 * n_merges // 4, n_merges - 1}):
        _, words = train_merges(counts, k)
        times = []
        for _ in range(3):
            state = [list(w) for w in words]
            start = time.perf_counter()
            picked = train_merges_naive(counts, 1, start_id=256 + k, words=state)
            times.append(time.perf_counter() - start)
        if picked != [merges[k]]:
            raise AssertionError(f"merge {k}: the naive trainer picks {picked}, ours {merges[k]}")
        per_merge[k] = statistics.median(times)
    ks = sorted(per_merge)
    naive_total = per_merge[ks[-1]] + sum((b - a) * (per_merge[a] + per_merge[b]) / 2 for a, b in zip(ks, ks[1:]))
    return {"words": len(counts), "pretokenize": pre, "ours": ours, "n_merges": n_merges, "naive_merges": naive_merges,
            "ours_first": ours_first_t, "naive_first": naive_first_t, "naive_per_merge": per_merge,
            "naive_total": naive_total}


def report(enc: dict, tr: dict, vocab_size: int) -> None:
    mb = enc["bytes"] / 1e6
    print(f"text: {enc['chars']:,} characters, {mb:.2f} MB, {enc['tokens']:,} GPT-2 tokens (ids identical to tiktoken)")
    print("\nencode (GPT-2's files)      MB/s")
    for label, key in (("ours, empty cache", "cold"), ("ours, cache filled", "warm"), ("tiktoken (Rust)", "tiktoken")):
        print(f"  {label:24s} {mb / enc[key]:6.2f}")
    print(f"  tiktoken / ours: {enc['cold'] / enc['tiktoken']:.1f}x with an empty cache, "
          f"{enc['warm'] / enc['tiktoken']:.1f}x with the cache filled")
    n = tr["n_merges"]
    print(f"\ntraining a {vocab_size:,}-token vocabulary ({n:,} merges, {tr['words']:,} distinct words; "
          f"pre-tokenizing {tr['pretokenize']:.1f} s, not counted)")
    print(f"  ours (incremental pair counts): {tr['ours']:.1f} s")
    print(f"  naive, first {tr['naive_merges']} merges: {tr['naive_first']:.1f} s "
          f"(ours for the same merges, same result: {tr['ours_first']:.2f} s, {tr['naive_first'] / tr['ours_first']:.0f}x)")
    costs = ", ".join(f"{t * 1e3:.0f} ms after {k:,}" for k, t in tr["naive_per_merge"].items())
    print(f"  naive, one merge: {costs}")
    print(f"  naive for all {n:,} merges, extrapolated: {tr['naive_total']:.0f} s")
    print(f"  naive / ours: {tr['naive_total'] / tr['ours']:.0f}x")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=1.0, help="text size in MB (default 1)")
    parser.add_argument("--vocab-size", type=int, default=5000)
    parser.add_argument("--naive-merges", type=int, default=20, help="merges the naive trainer really runs")
    parser.add_argument("--quick", action="store_true", help="0.1 MB, 1,000 tokens, 5 naive merges")
    args = parser.parse_args(argv)
    if args.quick:
        args.mb, args.vocab_size, args.naive_merges = 0.1, 1000, 5
    from tools.offline import use_shared_data

    use_shared_data()  # offline tiktoken cache and asset mirror when ../shared is there
    text = build_corpus(int(args.mb * 1e6))
    enc = bench_encode(text)
    tr = bench_train(text, args.vocab_size, args.naive_merges)
    report(enc, tr, args.vocab_size)
    return {"encode": enc, "train": tr}


if __name__ == "__main__":
    main()
