"""Chapter 7: instruction data (Alpaca prompt), padded batches with -100 masks, responses, and scoring them.

Scoring: the book's judge is a local Ollama server (`query_ollama`, `judge_scores`); `rouge_l_f1` is an
offline score that needs no model (longest common subsequence of lowercase words).
"""

from __future__ import annotations

import json
import numbers
import re
import textwrap
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .checks import END_OF_TEXT, END_OF_TEXT_ID, atomic_write_text, check_file, check_int
from .generate import generate, text_to_token_ids

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy skips targets with this value


# --- data ---------------------------------------------------------------------------------------------------------


def check_entries(data) -> None:
    """Raise ValueError if `data` is empty or an entry lacks a non-empty 'instruction' or an 'output' string."""
    if isinstance(data, (str, bytes, dict)) or not hasattr(data, "__len__"):
        raise TypeError(f"the instruction data must be a list of {{'instruction', 'input', 'output'}} dicts, "
                        f"got {type(data).__name__}")
    if len(data) == 0:
        raise ValueError("the instruction data set is empty: expected a list of {'instruction', 'input', 'output'} dicts")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {i} is a {type(entry).__name__}, not a dict with 'instruction', 'input', 'output'")
        for key in ("instruction", "output"):
            if not isinstance(entry.get(key), str) or (key == "instruction" and not entry[key].strip()):
                raise ValueError(f"entry {i} has no {key!r} text (keys: {sorted(entry)}): fix or drop that entry")
        if not isinstance(entry.get("input", ""), str):
            raise ValueError(f"entry {i}: 'input' must be a string (use '' for none)")
        if any(END_OF_TEXT in entry.get(key, "") for key in ("instruction", "input", "output")):
            raise ValueError(f"entry {i} holds the text {END_OF_TEXT}, GPT-2's end-of-text token, which its tokenizer refuses inside a text (and which ends every response): remove it from that entry")


def read_json_list(path, asset: str, what: str = "instruction data file") -> list:
    """The JSON list in the UTF-8 file `path`; ValueError naming the line of a broken file, or saying it is empty.

    `asset`: the name `fetch` downloads the book's file by, for the hint.
    """
    raw = check_file(path, what, f"fetch({asset!r}) downloads the book's").read_bytes()
    if not raw.strip():
        raise ValueError(f"{path} is empty: delete it and fetch({asset!r}) again, or write a JSON list of entries")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text: save the file as UTF-8 (or fix that line)") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path}, line {exc.lineno}, column {exc.colno}: not valid JSON ({exc.msg}): fix that line, or delete "
            f"the file and fetch({asset!r}) again"
        ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def load_instruction_data(path) -> list[dict]:
    """Read the instruction JSON (a list of {'instruction', 'input', 'output'} dicts) and check every entry."""
    data = read_json_list(path, "instruction-data")
    try:
        check_entries(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return data


def format_input(entry):
    """The book's Alpaca-style prompt: preamble, '### Instruction:' and, if the entry has one, '### Input:'."""
    instruction_text = (
        "Below is an instruction that describes a task. "
        "Write a response that appropriately completes the request."
        f"\n\n### Instruction:\n{entry['instruction']}"
    )
    input_text = f"\n\n### Input:\n{entry['input']}" if entry.get("input") else ""
    return instruction_text + input_text


def format_response(entry: dict) -> str:
    """The part the model learns to write after the prompt: '\\n\\n### Response:\\n' + output."""
    return f"\n\n### Response:\n{entry['output']}"


def split_data(data, train_frac=0.85, test_frac=0.10):
    """The book's split, in its order: first 85% train, next 10% test, the rest (5%) validation."""
    for name, frac in (("train_frac", train_frac), ("test_frac", test_frac)):
        if isinstance(frac, bool) or not isinstance(frac, numbers.Real) or not 0 <= frac <= 1:
            raise ValueError(f"{name} must be a fraction in [0, 1], got {frac!r}")
    if train_frac + test_frac > 1:
        raise ValueError(f"train_frac + test_frac must be at most 1 (the rest is validation), got {train_frac} + {test_frac}")
    if not hasattr(data, "__len__") or not hasattr(data, "__getitem__"):
        raise TypeError(f"data must be a list of entries, got {type(data).__name__}")
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    train_data = data[:train_portion]
    test_data = data[train_portion : train_portion + test_portion]
    val_data = data[train_portion + test_portion :]
    return train_data, test_data, val_data


class InstructionDataset(Dataset):
    """Entries pre-tokenized once: item i is the token id list of prompt + response of entry i."""

    def __init__(self, data, tokenizer):
        check_entries(data)  # an entry without 'instruction' or 'output' is named by its index
        self.data = data
        self.encoded_texts = []
        for entry in data:
            instruction_plus_input = format_input(entry)
            response_text = format_response(entry)
            full_text = instruction_plus_input + response_text
            self.encoded_texts.append(tokenizer.encode(full_text))

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def custom_collate_fn(batch, pad_token_id=END_OF_TEXT_ID, ignore_index=IGNORE_INDEX, allowed_max_length=None, device="cpu"):
    """Pad token id lists to one length; returns inputs, targets `(batch, num_tokens)` on `device`.

    Each item gets one `pad_token_id` (end of text) and is padded to the longest item + 1; targets are the
    inputs shifted by one, with every padding token after the first replaced by `ignore_index` so the loss
    skips it. With `allowed_max_length`, both are cut to that many tokens.
    """
    batch_max_length = max(len(item) + 1 for item in batch)
    inputs_lst, targets_lst = [], []
    for item in batch:
        new_item = list(item) + [pad_token_id]
        padded = new_item + [pad_token_id] * (batch_max_length - len(new_item))
        inputs = torch.tensor(padded[:-1])  # (batch_max_length - 1,)
        targets = torch.tensor(padded[1:])  # shifted by one: position t predicts token t + 1
        # mask padding, keeping the first end-of-text token (the model must learn to stop)
        targets[len(item) :] = ignore_index  # targets[len(item) - 1] is the appended end-of-text token
        if allowed_max_length is not None:
            inputs = inputs[:allowed_max_length]
            targets = targets[:allowed_max_length]
        inputs_lst.append(inputs)
        targets_lst.append(targets)
    inputs_tensor = torch.stack(inputs_lst).to(device)
    targets_tensor = torch.stack(targets_lst).to(device)
    return inputs_tensor, targets_tensor


# --- responses ----------------------------------------------------------------------------------------------------


def model_fingerprint(model) -> str:
    """A short string that changes when the weights change (parameter count and sum), to match saved responses."""
    with torch.no_grad():
        total = sum(p.detach().double().sum().item() for p in model.parameters())
        count = sum(p.numel() for p in model.parameters())
    return f"{count}:{total:.10e}"


def generate_response(model, entry, tokenizer, *, context_size, max_new_tokens=256, eos_id=END_OF_TEXT_ID, device="cpu"):
    """Greedy response to `format_input(entry)` (KV cache, stops at `eos_id`), without the prompt and '### Response:'.

    A prompt that leaves no room in the context is cut to its last tokens with a warning; new tokens are
    limited to what is left of the context window.
    """
    prompt = format_input(entry)
    idx = text_to_token_ids(prompt, tokenizer)  # (1, num_tokens)
    room = max(1, min(64, context_size // 4))  # keep room for at least a short answer
    if idx.shape[1] > context_size - room:
        warnings.warn(
            f"the prompt is {idx.shape[1]} tokens but the model's context is {context_size}: "
            f"keeping its last {context_size - room} tokens (the start of the instruction is lost)",
            stacklevel=2,
        )
        idx = idx[:, -(context_size - room) :]
    max_new = min(max_new_tokens, context_size - idx.shape[1])
    model.eval()
    out = generate(model, idx.to(device), max_new, context_size, eos_id=eos_id, use_cache=True)
    new_text = tokenizer.decode(out[0, idx.shape[1] :].tolist())  # the new tokens only (0, 1 or more)
    return new_text.replace("### Response:", "").strip()


def generate_responses(model, entries, tokenizer, path, *, context_size, max_new_tokens=256, eos_id=END_OF_TEXT_ID,
                       device="cpu", progress=True):
    """Add 'model_response' to a copy of each entry, writing `path` (JSON) atomically after every response.

    A rerun with the same weights (same `model_fingerprint`) and entries keeps the responses already saved and
    generates only the missing ones, so an interrupted run loses nothing. Returns the list of entries.
    """
    from tqdm import tqdm

    check_entries(entries)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fingerprint = model_fingerprint(model)
    results = [{k: v for k, v in e.items() if k not in ("model_response", "response_model")} for e in entries]
    if path.exists():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            where = f"line {exc.lineno}: {exc.msg}" if isinstance(exc, json.JSONDecodeError) else "not UTF-8"
            print(f"could not read the saved responses in {path.name} ({where}); generating them all again")
            saved = []
        for res, old in zip(results, saved if isinstance(saved, list) else []):
            same_entry = all(old.get(k) == res.get(k) for k in ("instruction", "input", "output"))
            if same_entry and old.get("response_model") == fingerprint and "model_response" in old:
                res["model_response"] = old["model_response"]
                res["response_model"] = fingerprint
    todo = [i for i, res in enumerate(results) if "model_response" not in res]
    if len(todo) < len(results):
        print(f"{len(results) - len(todo)} of {len(results)} responses already in {path.name}; generating the rest")
    for i in tqdm(todo, desc="Responses", disable=not progress, mininterval=1.0, ncols=90):
        results[i]["model_response"] = generate_response(
            model, results[i], tokenizer, context_size=context_size, max_new_tokens=max_new_tokens,
            eos_id=eos_id, device=device,
        )
        results[i]["response_model"] = fingerprint
        atomic_write_text(path, json.dumps(results, indent=4))  # entries still without a response are saved without the key
    if not todo:
        atomic_write_text(path, json.dumps(results, indent=4))
    return results


# --- offline score: ROUGE-L ---------------------------------------------------------------------------------------


def words(text: str) -> list[str]:
    """Lowercase word tokens (letters, digits, underscore), punctuation dropped."""
    return re.findall(r"\w+", text.lower())


def lcs_length(a, b) -> int:
    """Length of the longest common subsequence of sequences `a` and `b` (dynamic programming, O(len a * len b))."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]: LCS of the lowercase words; precision = LCS/len(candidate), recall = LCS/len(reference)."""
    for name, text in (("candidate", candidate), ("reference", reference)):
        if not isinstance(text, str):
            raise TypeError(f"{name} must be a str, got {type(text).__name__}")
    cand, ref = words(candidate), words(reference)
    if not cand or not ref:
        return float(cand == ref)
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def side_by_side(entry: dict, book_response: str, width: int = 29) -> str:
    """A test entry's instruction, then three wrapped columns: the correct response, the book's model's, this run's."""
    columns = [entry["output"], book_response, entry.get("model_response") or "(empty)"]
    wrapped = [textwrap.wrap(text, width) or [""] for text in columns]
    task = format_input(entry).split("### Instruction:\n", 1)[1].replace("\n\n### Input:\n", " | ")
    lines = [textwrap.fill(task, 3 * width + 6),
             " | ".join(f"{name:<{width}}" for name in ["correct response", "the book's model", "this run's model"]),
             "-+-".join("-" * width for _ in columns)]
    for i in range(max(len(w) for w in wrapped)):
        lines.append(" | ".join(f"{(w[i] if i < len(w) else ''):<{width}}" for w in wrapped))
    return "\n".join(lines) + "\n"


# --- length-grouped batches (the fast setting of chapter 7; off for the book's numbers) ---------------------------


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of indices of similar lengths: shuffle, sort each group of `group_batches` batches by length, cut
    into batches, shuffle the batches. Less padding; still a new random order every epoch (torch's random state)."""

    def __init__(self, lengths, batch_size: int, drop_last: bool = True, group_batches: int = 50):
        check_int(batch_size, "batch_size"), check_int(group_batches, "group_batches")
        self.lengths, self.batch_size, self.drop_last = list(lengths), batch_size, drop_last
        self.group = batch_size * group_batches

    def __iter__(self):
        order = torch.randperm(len(self.lengths)).tolist()
        batches = []
        for start in range(0, len(order), self.group):
            group = sorted(order[start:start + self.group], key=lambda i: self.lengths[i], reverse=True)
            batches += [group[i:i + self.batch_size] for i in range(0, len(group), self.batch_size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        for i in torch.randperm(len(batches)).tolist():
            yield batches[i]

    def __len__(self):
        full, rest = divmod(len(self.lengths), self.batch_size)
        return full if self.drop_last or not rest else full + 1


def length_grouped_loader(loader, group_batches: int = 50):
    """`loader` (over an InstructionDataset) with length-grouped batches: the same entries an epoch, less padding."""
    sampler = LengthGroupedBatchSampler([len(item) for item in loader.dataset], loader.batch_size, loader.drop_last,
                                        group_batches)
    return torch.utils.data.DataLoader(loader.dataset, batch_sampler=sampler, collate_fn=loader.collate_fn,
                                       num_workers=loader.num_workers)


def padding_fraction(loader) -> float:
    """Share of target positions in one pass of `loader` that are padding (`IGNORE_INDEX`): compute spent on nothing."""
    padded = total = 0
    for _, targets in loader:  # targets (batch, num_tokens)
        padded += int((targets == IGNORE_INDEX).sum())
        total += targets.numel()
    return padded / total
