"""Chapter 7: instruction data (Alpaca prompt), padded batches with -100 masks, responses, and scoring them.

Scoring: the book's judge is a local Ollama server (`query_ollama`, `judge_scores`); `rouge_l_f1` is an
offline score that needs no model (longest common subsequence of lowercase words).
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .generate import generate, text_to_token_ids

PAD_TOKEN_ID = 50256  # <|endoftext|>, GPT-2's only special token, doubles as padding
IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy skips targets with this value
OLLAMA_URL = "http://localhost:11434"
JUDGE_PROMPT = (
    "Given the input `{input}` and correct output `{output}`, score the model response `{response}`"
    " on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
)


# --- data ---------------------------------------------------------------------------------------------------------


def check_entries(data) -> None:
    """Raise ValueError if `data` is empty or an entry lacks a non-empty 'instruction' or an 'output' string."""
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


def load_instruction_data(path) -> list[dict]:
    """Read the instruction JSON (a list of {'instruction', 'input', 'output'} dicts) and check every entry."""
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    check_entries(data)
    return data


def format_input(entry: dict) -> str:
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
    train_portion = int(len(data) * train_frac)
    test_portion = int(len(data) * test_frac)
    train_data = data[:train_portion]
    test_data = data[train_portion : train_portion + test_portion]
    val_data = data[train_portion + test_portion :]
    return train_data, test_data, val_data


class InstructionDataset(Dataset):
    """Entries pre-tokenized once: item i is the token id list of prompt + response of entry i."""

    def __init__(self, data, tokenizer):
        check_entries(data)
        self.data = data
        self.encoded_texts = [tokenizer.encode(format_input(entry) + format_response(entry)) for entry in data]

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def custom_collate_fn(batch, pad_token_id=PAD_TOKEN_ID, ignore_index=IGNORE_INDEX, allowed_max_length=None, device="cpu"):
    """Pad token id lists to one length; returns inputs, targets `(batch, num_tokens)` on `device`.

    Each item gets one `pad_token_id` (end of text) and is padded to the longest item + 1; targets are the
    inputs shifted by one, with every padding token after the first replaced by `ignore_index` so the loss
    skips it. With `allowed_max_length`, both are cut to that many tokens.
    """
    if len(batch) == 0:
        raise ValueError("custom_collate_fn got an empty batch")
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
    return torch.stack(inputs_lst).to(device), torch.stack(targets_lst).to(device)


# --- responses ----------------------------------------------------------------------------------------------------


def model_fingerprint(model) -> str:
    """A short string that changes when the weights change (parameter count and sum), to match saved responses."""
    with torch.no_grad():
        total = sum(p.detach().double().sum().item() for p in model.parameters())
        count = sum(p.numel() for p in model.parameters())
    return f"{count}:{total:.10e}"


def generate_response(model, entry, tokenizer, *, context_size, max_new_tokens=256, eos_id=PAD_TOKEN_ID, device="cpu"):
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


def _write_json_atomic(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=4)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def generate_responses(model, entries, tokenizer, path, *, context_size, max_new_tokens=256, eos_id=PAD_TOKEN_ID,
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
        except (json.JSONDecodeError, UnicodeDecodeError):
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
        _write_json_atomic(path, results)  # entries still without a response are saved without the key
    if not todo:
        _write_json_atomic(path, results)
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
    cand, ref = words(candidate), words(reference)
    if not cand or not ref:
        return float(cand == ref)
    lcs = lcs_length(cand, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(cand), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


# --- the book's judge: an Ollama server ---------------------------------------------------------------------------


class OllamaError(RuntimeError):
    """The Ollama server could not be reached, answered an HTTP error, or sent something that is not its JSON."""


def ollama_url() -> str:
    """The judge's base URL: `$OLLAMA_URL`, else http://localhost:11434."""
    return os.environ.get("OLLAMA_URL", OLLAMA_URL).rstrip("/")


def ollama_reachable(url=None, timeout=2.0) -> bool:
    """True if an Ollama server answers at `url` (GET /api/tags)."""
    url = (url or ollama_url()).rstrip("/")
    try:
        with urllib.request.urlopen(url + "/api/tags", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def query_ollama(prompt, model="llama3", url=None, timeout=120.0) -> str:
    """The book's `query_model`: POST {url}/api/chat (seed 123, temperature 0) and join the streamed message parts."""
    url = (url or ollama_url()).rstrip("/")
    data = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"seed": 123, "temperature": 0, "num_ctx": 2048},
    }
    request = urllib.request.Request(
        url + "/api/chat", data=json.dumps(data).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", errors="replace")[:200]
        raise OllamaError(f"Ollama at {url} answered HTTP {exc.code} ({detail.strip() or exc.reason})") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OllamaError(
            f"no Ollama server at {url} ({reason}): start one with `ollama serve` and `ollama pull {model}`, "
            "or set OLLAMA_URL"
        ) from None
    parts = []
    for line in body.splitlines():  # one JSON object per line when streaming, a single one otherwise
        if not line.strip():
            continue
        try:
            parts.append(json.loads(line)["message"]["content"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise OllamaError(f"Ollama at {url} sent a line that is not a chat message: {line[:200]!r}") from None
    if not parts:
        raise OllamaError(f"Ollama at {url} sent an empty answer")
    return "".join(parts)


def judge_prompt(entry, key="model_response") -> str:
    """The book's scoring prompt for one entry."""
    return JUDGE_PROMPT.format(input=format_input(entry), output=entry["output"], response=entry[key])


def judge_scores(entries, key="model_response", model="llama3", url=None, progress=True) -> list[int | None]:
    """Score each entry's response 0-100 with the Ollama judge; None (and a printed line) where it gave no integer.

    An HTTP error or malformed answer skips that entry; an unreachable server raises OllamaError at once.
    """
    from tqdm import tqdm

    scores = []
    for i, entry in enumerate(tqdm(entries, desc="Scoring entries", disable=not progress, ncols=90)):
        try:
            answer = query_ollama(judge_prompt(entry, key), model=model, url=url)
        except OllamaError as exc:
            if str(exc).startswith("no Ollama server"):
                raise
            print(f"skipped entry {i}: {exc}")
            scores.append(None)
            continue
        try:
            scores.append(int(answer.strip()))
        except ValueError:
            print(f"skipped entry {i}: could not convert score {answer.strip()[:60]!r}")
            scores.append(None)
    return scores
