"""Chapter 7: instruction data (Alpaca prompt), padded batches with -100 masks, responses, and scoring them.

Scoring: the book's judge is a local Ollama server (`query_ollama`, `judge_scores`); `rouge_l_f1` is an
offline score that needs no model (longest common subsequence of lowercase words).
"""

from __future__ import annotations

import http.client
import json
import math
import numbers
import os
import re
import socket
import urllib.error
import urllib.parse
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


END_OF_TEXT = "<|endoftext|>"


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _check_path(path, name: str = "path") -> None:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise TypeError(f"{name} must be a file path (str or Path), got {path!r}")


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


def load_instruction_data(path) -> list[dict]:
    """Read the instruction JSON (a list of {'instruction', 'input', 'output'} dicts) and check every entry."""
    _check_path(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"there is no file at {path}: fetch('instruction-data') downloads the book's")
    raw = Path(path).read_bytes()
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
            "the file and fetch('instruction-data') again"
        ) from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    try:
        check_entries(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return data


def _check_prompt_entry(entry) -> None:
    """An entry that can be turned into a prompt: a dict with an 'instruction' string (and a string 'input', if any)."""
    if not isinstance(entry, dict):
        raise TypeError(f"entry must be a dict such as {{'instruction': '...', 'input': ''}}, got {type(entry).__name__}")
    if not isinstance(entry.get("instruction"), str) or not entry["instruction"].strip():
        raise ValueError(f"entry has no 'instruction' text (keys: {sorted(entry)}): add one, e.g. "
                         "{'instruction': 'Rewrite the sentence in passive voice.', 'input': '...'}")
    if not isinstance(entry.get("input") or "", str):
        raise ValueError("entry['input'] must be a string (use '' for none)")


def format_input(entry: dict) -> str:
    """The book's Alpaca-style prompt: preamble, '### Instruction:' and, if the entry has one, '### Input:'."""
    _check_prompt_entry(entry)
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
        check_entries(data)
        if isinstance(tokenizer, (str, bytes)) or not callable(getattr(tokenizer, "encode", None)):
            raise TypeError(f"tokenizer must have an encode method (e.g. gpt2_tokenizer()), got {type(tokenizer).__name__}")
        for i, entry in enumerate(data):
            for key in ("instruction", "input", "output"):
                if END_OF_TEXT in (entry.get(key) or ""):
                    raise ValueError(
                        f"entry {i} ({key!r}) contains the literal text {END_OF_TEXT}, GPT-2's end-of-text marker, "
                        "which marks where a training example ends: remove it from that entry (or replace it)"
                    )
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
    for i, item in enumerate(batch):
        if isinstance(item, (str, bytes)) or not hasattr(item, "__len__") or len(item) == 0:
            raise ValueError(f"batch item {i} must be a non-empty list of token ids (an InstructionDataset item), "
                             f"got {item!r:.60}")
    if not _is_int(pad_token_id) or pad_token_id < 0:
        raise ValueError(f"pad_token_id must be a token id (GPT-2's <|endoftext|> is 50256), got {pad_token_id!r}")
    if not _is_int(ignore_index):
        raise ValueError(f"ignore_index must be a whole number (-100, which cross_entropy skips), got {ignore_index!r}")
    if allowed_max_length is not None and (not _is_int(allowed_max_length) or allowed_max_length < 1):
        raise ValueError(f"allowed_max_length must be a whole number >= 1 or None, got {allowed_max_length!r}")
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
    _check_prompt_entry(entry)
    if not _is_int(context_size) or context_size < 2:
        raise ValueError(f"context_size must be the model's context length (a whole number >= 2), got {context_size!r}")
    if not _is_int(max_new_tokens) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
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
    _check_path(path)
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


# --- the book's judge: an Ollama server ---------------------------------------------------------------------------


class OllamaError(RuntimeError):
    """The Ollama server could not be reached, answered an HTTP error, or sent something that is not its JSON."""


class OllamaUnreachable(OllamaError):
    """No server answered at the URL (connection refused, unknown host)."""


class OllamaModelMissing(OllamaError):
    """The server answered, but has not pulled the model: `ollama pull <model>`."""


class OllamaTimeout(OllamaError):
    """The server accepted the request but sent no answer within `timeout` seconds."""


def _check_url(url, where: str) -> str:
    parsed = urllib.parse.urlparse(url) if isinstance(url, str) else None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"{where}={url!r} is not an http(s) URL: use e.g. http://localhost:11434")
    return url.rstrip("/")


def _check_timeout(timeout) -> None:
    if isinstance(timeout, bool) or not isinstance(timeout, numbers.Real) or not (timeout > 0 and math.isfinite(timeout)):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")


def ollama_url() -> str:
    """The judge's base URL: `$OLLAMA_URL`, else http://localhost:11434."""
    raw = os.environ.get("OLLAMA_URL")
    if raw is None or not raw.strip():
        return OLLAMA_URL
    return _check_url(raw.strip(), "the environment variable OLLAMA_URL")


def ollama_reachable(url=None, timeout=2.0) -> bool:
    """True if an Ollama server answers at `url` (GET /api/tags)."""
    url = ollama_url() if url is None else _check_url(url, "url")
    _check_timeout(timeout)
    try:
        with urllib.request.urlopen(url + "/api/tags", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException):
        return False


def _is_timeout(exc: BaseException) -> bool:
    reason = getattr(exc, "reason", exc)
    return isinstance(reason, (TimeoutError, socket.timeout)) or "timed out" in str(reason)


def _missing_model(detail: str) -> bool:
    text = detail.lower()
    return "not found" in text and ("pull" in text or "model" in text)


def query_ollama(prompt, model="llama3", url=None, timeout=120.0) -> str:
    """The book's `query_model`: POST {url}/api/chat (seed 123, temperature 0) and join the streamed message parts.

    Waits at most `timeout` seconds for each read (a first answer on a CPU can take minutes: raise it then).
    Raises OllamaUnreachable (no server), OllamaModelMissing (`ollama pull <model>`), OllamaTimeout, or
    OllamaError (an HTTP error, a dropped connection, or an answer that is not Ollama's JSON).
    """
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r:.60}")
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be the name of an Ollama model (e.g. 'llama3'), got {model!r}")
    url = ollama_url() if url is None else _check_url(url, "url")
    _check_timeout(timeout)
    data = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "options": {"seed": 123, "temperature": 0, "num_ctx": 2048},
    }
    request = urllib.request.Request(
        url + "/api/chat", data=json.dumps(data).encode("utf-8"), method="POST",
        headers={"Content-Type": "application/json"},
    )
    slow = (f"Ollama at {url} sent no answer within timeout={timeout:g} s (a server answered, but loading "
            f"{model} or answering on a CPU can take minutes): pass a larger timeout, e.g. timeout=600")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as exc:
        try:
            detail = exc.read().decode("utf-8", errors="replace")[:200]
        except (OSError, http.client.HTTPException):
            detail = ""
        if exc.code == 404 or _missing_model(detail):
            raise OllamaModelMissing(
                f"the Ollama server at {url} has no model {model!r} ({detail.strip() or exc.reason}): "
                f"run `ollama pull {model}` in a terminal, then try again"
            ) from None
        raise OllamaError(f"Ollama at {url} answered HTTP {exc.code} ({detail.strip() or exc.reason})") from None
    except http.client.HTTPException as exc:  # IncompleteRead, RemoteDisconnected: the server answered, then dropped
        raise OllamaError(
            f"the connection to Ollama at {url} dropped before the answer was complete ({type(exc).__name__}): "
            "try again; if it keeps happening, restart `ollama serve` (it may have run out of memory)"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        if _is_timeout(exc):
            raise OllamaTimeout(slow) from None
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ConnectionResetError) or isinstance(exc, ConnectionResetError):
            raise OllamaError(f"the connection to Ollama at {url} was reset mid-answer ({reason}): try again, or "
                              "restart `ollama serve`") from None
        raise OllamaUnreachable(
            f"no Ollama server at {url} ({reason}): start one with `ollama serve` and `ollama pull {model}`, "
            "or set OLLAMA_URL"
        ) from None
    parts = []
    for line in body.splitlines():  # one JSON object per line when streaming, a single one otherwise
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            raise OllamaError(f"Ollama at {url} sent a line that is not a chat message: {line[:200]!r}") from None
        if isinstance(obj, dict) and "error" in obj:
            error = str(obj["error"])[:200]
            if _missing_model(error):
                raise OllamaModelMissing(f"the Ollama server at {url} has no model {model!r} ({error}): "
                                         f"run `ollama pull {model}` in a terminal, then try again")
            raise OllamaError(f"Ollama at {url} reported an error: {error}")
        try:
            parts.append(obj["message"]["content"])
        except (KeyError, TypeError):
            raise OllamaError(f"Ollama at {url} sent a line that is not a chat message: {line[:200]!r}") from None
    if not parts:
        raise OllamaError(f"Ollama at {url} sent an empty answer")
    return "".join(parts)


def judge_prompt(entry, key="model_response") -> str:
    """The book's scoring prompt for one entry."""
    return JUDGE_PROMPT.format(input=format_input(entry), output=entry["output"], response=entry[key])


def judge_scores(entries, key="model_response", model="llama3", url=None, progress=True,
                 timeout=120.0) -> list[int | None]:
    """Score each entry's response 0-100 with the Ollama judge; None (and a printed line) where it gave no integer.

    An HTTP error or malformed answer skips that entry; no server, a model not pulled, or no answer within
    `timeout` seconds raises at once (each would repeat for every entry).
    """
    from tqdm import tqdm

    check_entries(entries)
    for i, entry in enumerate(entries):
        if not isinstance(entry.get(key), str):
            raise ValueError(f"entry {i} has no {key!r} text to score: run generate_responses first (or pass key=...)")
    url = ollama_url() if url is None else _check_url(url, "url")
    _check_timeout(timeout)
    scores = []
    for i, entry in enumerate(tqdm(entries, desc="Scoring entries", disable=not progress, ncols=90)):
        try:
            answer = query_ollama(judge_prompt(entry, key), model=model, url=url, timeout=timeout)
        except OllamaError as exc:
            if isinstance(exc, (OllamaUnreachable, OllamaModelMissing, OllamaTimeout)):
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


# --- length-grouped batches (the fast setting of chapter 7; off for the book's numbers) ---------------------------


class LengthGroupedBatchSampler(torch.utils.data.Sampler):
    """Batches of indices of similar lengths: shuffle, sort each group of `group_batches` batches by length, cut
    into batches, shuffle the batches. Less padding; still a new random order every epoch (torch's random state)."""

    def __init__(self, lengths, batch_size: int, drop_last: bool = True, group_batches: int = 50):
        if not _is_int(batch_size) or batch_size < 1 or not _is_int(group_batches) or group_batches < 1:
            raise ValueError(f"batch_size and group_batches must be whole numbers >= 1, got {batch_size!r}, {group_batches!r}")
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
