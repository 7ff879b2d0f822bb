"""Chapter 7: scoring responses with the book's judge, a Llama 3 model served by a local Ollama server.

`query_ollama` is the book's `query_model` (POST /api/chat, seed 123, temperature 0); `judge_scores` asks it for
a 0-100 score per entry. Every way the server can fail raises an `OllamaError` that says what to do.
"""

from __future__ import annotations

import http.client
import json
import math
import numbers
import os
import socket
import urllib.error
import urllib.parse
import urllib.request

from .instruct import check_entries, format_input

OLLAMA_URL = "http://localhost:11434"
JUDGE_PROMPT = (
    "Given the input `{input}` and correct output `{output}`, score the model response `{response}`"
    " on a scale from 0 to 100, where 100 is the best score. Respond with the integer number only."
)


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
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        raise _ollama_error(exc, url, model, timeout) from None
    return _chat_text(body, url, model)


def _ollama_error(exc: Exception, url: str, model: str, timeout: float) -> OllamaError:
    """The OllamaError that says what went wrong with a request to `url`, and what to do."""
    if isinstance(exc, urllib.error.HTTPError):
        try:
            detail = exc.read().decode("utf-8", errors="replace")[:200]
        except (OSError, http.client.HTTPException):
            detail = ""
        if exc.code == 404 or _missing_model(detail):
            return OllamaModelMissing(f"the Ollama server at {url} has no model {model!r} ({detail.strip() or exc.reason}): "
                                      f"run `ollama pull {model}` in a terminal, then try again")
        return OllamaError(f"Ollama at {url} answered HTTP {exc.code} ({detail.strip() or exc.reason})")
    if isinstance(exc, http.client.HTTPException):  # IncompleteRead, RemoteDisconnected: answered, then dropped
        return OllamaError(f"the connection to Ollama at {url} dropped before the answer was complete ({type(exc).__name__}): "
                           "try again; if it keeps happening, restart `ollama serve` (it may have run out of memory)")
    if _is_timeout(exc):
        return OllamaTimeout(f"Ollama at {url} sent no answer within timeout={timeout:g} s (a server answered, but loading "
                             f"{model} or answering on a CPU can take minutes): pass a larger timeout, e.g. timeout=600")
    reason = getattr(exc, "reason", exc)
    if isinstance(reason, ConnectionResetError) or isinstance(exc, ConnectionResetError):
        return OllamaError(f"the connection to Ollama at {url} was reset mid-answer ({reason}): try again, or "
                           "restart `ollama serve`")
    return OllamaUnreachable(f"no Ollama server at {url} ({reason}): start one with `ollama serve` and "
                             f"`ollama pull {model}`, or set OLLAMA_URL")


def _chat_text(body: str, url: str, model: str) -> str:
    """The message text of Ollama's (streamed) /api/chat answer `body`; OllamaError if it is not one."""
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
