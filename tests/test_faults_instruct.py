"""Fault catalogue of utils.instruct: data files and entries, batches, responses, and the Ollama judge.

Each case: (id, set-up(ctx) -> callable, exception, message fragment); afterwards no `.tmp`/`.part` file is left.
The Ollama cases run against a local server that misbehaves on purpose (never the internet).
"""

import http.server
import json
import threading
import time
from types import SimpleNamespace

import pytest
from faults import catalogue, expect_fault
from tiny import CharTokenizer, tiny_model

from utils.instruct import (
    InstructionDataset,
    generate_responses,
    load_instruction_data,
    rouge_l_f1,
    split_data,
)
from utils.judge import (
    OllamaError,
    OllamaModelMissing,
    OllamaTimeout,
    OllamaUnreachable,
    judge_scores,
    ollama_reachable,
    ollama_url,
    query_ollama,
)

ENTRY = {"instruction": "Spell it right.", "input": "Ocassion", "output": "Occasion", "model_response": "Occasion"}


class Ollama(http.server.BaseHTTPRequestHandler):
    mode = "ok"

    def log_message(self, *args):
        pass

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        mode = type(self).mode
        if mode == "missing":
            self._send(404, b'{"error":"model \\"llama3\\" not found, try pulling it first"}')
        elif mode == "stream-error":
            self._send(200, b'{"error":"model \\"llama3\\" not found, try pulling it first"}\n')
        elif mode == "drop":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b'{"message": {"content": "8')
            self.wfile.flush()
            self.close_connection = True
        elif mode == "slow":
            time.sleep(1.5)
            self._send(200, b'{"message": {"content": "85"}}')
        elif mode == "not-json":
            self._send(200, b"<html>proxy error</html>")
        else:
            self._send(200, b'{"message": {"content": "85"}}')

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Ollama)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    Ollama.mode = "ok"
    yield SimpleNamespace(tmp=tmp_path, mp=monkeypatch, url=f"http://127.0.0.1:{server.server_address[1]}")
    server.shutdown()
    server.server_close()


def ollama(mode, call):
    def setup(c):
        Ollama.mode = mode
        return lambda: call(c)
    return setup


def data_file(content):
    def setup(c):
        path = c.tmp / "data.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return lambda: load_instruction_data(path)
    return setup


def small_model():
    return tiny_model(0, vocab_size=60, context_length=32, emb_dim=16, n_heads=2, n_layers=1)


GOOD_JSON = json.dumps([{"instruction": "a", "input": "", "output": "b"}], indent=1)

CASES = [
    ("data file missing", lambda c: lambda: load_instruction_data(c.tmp / "none.json"), FileNotFoundError,
     "fetch('instruction-data')"),
    ("data file bad JSON", data_file(GOOD_JSON[:-2] + ",,]"), ValueError, "data.json, line 6, column"),
    ("data file not UTF-8", data_file(GOOD_JSON.encode().replace(b'"b"', b'"\xff"')), ValueError,
     "line 5: not UTF-8 text"),
    ("data file a dict", data_file('{"instruction": "a"}'), ValueError, "expected a JSON list of entries"),
    ("data file entry without output", data_file('[{"instruction": "a", "input": ""}]'), ValueError,
     "entry 0 has no 'output' text"),
    ("data file empty list", data_file("[]"), ValueError, "the instruction data set is empty"),
    ("data file entry holding <|endoftext|>", data_file(GOOD_JSON.replace('"b"', '"b<|endoftext|>"')), ValueError,
     "data.json: entry 0 holds the text <|endoftext|>, GPT-2's end-of-text token, which its tokenizer refuses inside a "
     "text (and which ends every response): remove it from that entry"),
    ("entry input holding <|endoftext|>", lambda c: lambda: InstructionDataset(
        [ENTRY, {**ENTRY, "input": "<|endoftext|>"}], CharTokenizer()), ValueError, "entry 1 holds the text <|endoftext|>"),
    ("entries a string", lambda c: lambda: InstructionDataset("abc", CharTokenizer()), TypeError,
     "must be a list of {'instruction', 'input', 'output'} dicts"),
    ("entry input a number", lambda c: lambda: InstructionDataset([{**ENTRY, "input": 3}], CharTokenizer()), ValueError,
     "'input' must be a string"),
    ("split fractions over 1", lambda c: lambda: split_data([1, 2, 3], 0.9, 0.2), ValueError,
     "train_frac + test_frac must be at most 1"),
    ("split negative", lambda c: lambda: split_data([1, 2, 3], -0.1), ValueError, "train_frac must be a fraction"),
    ("rouge on a list", lambda c: lambda: rouge_l_f1(["a"], "a"), TypeError, "candidate must be a str"),
    ("OLLAMA_URL not a URL", lambda c: (c.mp.setenv("OLLAMA_URL", "localhost:11434"), ollama_url)[1], ValueError,
     "the environment variable OLLAMA_URL='localhost:11434' is not an http(s) URL"),
    ("reachable timeout 0", lambda c: lambda: ollama_reachable(c.url, timeout=0), ValueError,
     "timeout must be a positive number of seconds"),
    ("query empty prompt", lambda c: lambda: query_ollama("", url=c.url), ValueError, "prompt must be a non-empty string"),
    ("query timeout nan", lambda c: lambda: query_ollama("x", url=c.url, timeout=float("nan")), ValueError,
     "timeout must be a positive number"),
    ("model not pulled", ollama("missing", lambda c: query_ollama("x", url=c.url)), OllamaModelMissing,
     "run `ollama pull llama3`"),
    ("model not pulled, streamed", ollama("stream-error", lambda c: query_ollama("x", model="llama3", url=c.url)),
     OllamaModelMissing, "`ollama pull llama3`"),
    ("judge stops at once without the model", ollama("missing", lambda c: judge_scores([ENTRY] * 3, url=c.url,
                                                                                       progress=False)),
     OllamaModelMissing, "ollama pull llama3"),
    ("connection dropped mid-answer", ollama("drop", lambda c: query_ollama("x", url=c.url)), OllamaError,
     "dropped before the answer was complete"),
    ("slow server", ollama("slow", lambda c: query_ollama("x", url=c.url, timeout=0.3)), OllamaTimeout,
     "pass a larger timeout"),
    ("judge on a slow server", ollama("slow", lambda c: judge_scores([ENTRY], url=c.url, progress=False, timeout=0.3)),
     OllamaTimeout, "a server answered"),
    ("no server", lambda c: lambda: query_ollama("x", url="http://127.0.0.1:9"), OllamaUnreachable, "`ollama serve`"),
    ("judge without responses", lambda c: lambda: judge_scores([{**ENTRY, "model_response": None}], url=c.url,
                                                               progress=False),
     ValueError, "run generate_responses first"),
]


@catalogue(CASES)
def test_fault(ctx, case):
    error = expect_fault(case, ctx, ctx.tmp)
    if isinstance(error, OllamaError) and not isinstance(error, OllamaUnreachable):
        assert "no Ollama server" not in str(error)  # a server answered: never say there is none


@pytest.mark.filterwarnings("ignore:the prompt is")
def test_a_corrupt_response_cache_is_said_and_regenerated(ctx, capsys):
    path = ctx.tmp / "responses.json"
    path.write_text('[{"instruction": ')
    out = generate_responses(small_model(), [ENTRY], CharTokenizer(), path, context_size=32, max_new_tokens=2, eos_id=0,
                             progress=False)
    assert "could not read the saved responses in responses.json (line 1" in capsys.readouterr().out
    assert json.loads(path.read_text())[0]["model_response"] == out[0]["model_response"]
    assert not list(ctx.tmp.glob("*.tmp"))


def test_a_prompt_needs_only_an_instruction():
    from utils.instruct import format_input

    assert format_input({"instruction": "Name a colour."}).endswith("### Instruction:\nName a colour.")
