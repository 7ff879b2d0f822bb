"""utils.instruct: prompt format, split, dataset, collate (-100 masking), responses saved as they come, ROUGE-L,
and the Ollama judge against a fake server on 127.0.0.1."""

import http.server
import json
import socket
import threading

import pytest
import torch

from utils import GPTModel, calc_loss_batch, fetch, gpt2_config, gpt2_tokenizer, instruct, train_model_simple
from utils.instruct import (
    InstructionDataset,
    check_entries,
    custom_collate_fn,
    format_input,
    generate_response,
    generate_responses,
    lcs_length,
    load_instruction_data,
    rouge_l_f1,
    split_data,
)
from utils.judge import OllamaError, judge_prompt, judge_scores, ollama_reachable, query_ollama

ENTRY_WITH_INPUT = {"instruction": "Identify the correct spelling of the following word.", "input": "Ocassion",
                    "output": "The correct spelling is 'Occasion.'"}
ENTRY_NO_INPUT = {"instruction": "What is an antonym of 'complicated'?", "input": "",
                  "output": "An antonym of 'complicated' is 'simple'."}
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


def tiny_model(context_length=64):
    torch.manual_seed(123)
    return GPTModel(gpt2_config("124M", emb_dim=32, n_heads=2, n_layers=2, context_length=context_length))


# --- prompt format, entries, split ---------------------------------------------------------------------------------


def test_format_input_with_and_without_input():
    assert format_input(ENTRY_WITH_INPUT) == (
        PREAMBLE + "\n\n### Instruction:\nIdentify the correct spelling of the following word.\n\n### Input:\nOcassion"
    )
    assert format_input(ENTRY_NO_INPUT) == PREAMBLE + "\n\n### Instruction:\nWhat is an antonym of 'complicated'?"
    assert format_input({"instruction": "Hi.", "output": "Hello."}) == PREAMBLE + "\n\n### Instruction:\nHi."


def test_split_is_the_books_85_10_5_in_train_test_val_order():
    data = [{"instruction": str(i), "input": "", "output": str(i)} for i in range(1100)]
    train, test, val = split_data(data)
    assert (len(train), len(test), len(val)) == (935, 110, 55)
    assert train[0]["instruction"] == "0" and test[0]["instruction"] == "935" and val[0]["instruction"] == "1045"


def test_real_data_loads_and_splits():
    data = load_instruction_data(fetch("instruction-data"))
    assert len(data) == 1100
    assert data[50] == ENTRY_WITH_INPUT and data[999] == ENTRY_NO_INPUT
    assert [len(part) for part in split_data(data)] == [935, 110, 55]


@pytest.mark.parametrize("bad, words", [
    ({"input": "", "output": "x"}, ["entry 2", "'instruction'"]),
    ({"instruction": "Do it.", "input": ""}, ["entry 2", "'output'"]),
    ({"instruction": "  ", "input": "", "output": "x"}, ["entry 2", "'instruction'"]),
    ({"instruction": "Do it.", "input": 3, "output": "x"}, ["entry 2", "'input'"]),
    ("just text", ["entry 2", "dict"]),
])
def test_bad_entry_names_its_index(bad, words, tokenizer):
    data = [ENTRY_WITH_INPUT, ENTRY_NO_INPUT, bad]
    with pytest.raises(ValueError) as err:
        check_entries(data)
    assert all(w in str(err.value) for w in words)
    with pytest.raises(ValueError, match="entry 2"):
        InstructionDataset(data, tokenizer)


def test_empty_data_set_is_an_error(tokenizer, tmp_path):
    with pytest.raises(ValueError, match="empty"):
        InstructionDataset([], tokenizer)
    path = tmp_path / "empty.json"
    path.write_text("[]")
    with pytest.raises(ValueError, match="empty"):
        load_instruction_data(path)
    path.write_text('{"instruction": "x"}')
    with pytest.raises(ValueError, match="JSON list"):
        load_instruction_data(path)


def test_dataset_is_pretokenized_prompt_plus_response(tokenizer):
    ds = InstructionDataset([ENTRY_WITH_INPUT, ENTRY_NO_INPUT], tokenizer)
    assert len(ds) == 2
    text = format_input(ENTRY_NO_INPUT) + "\n\n### Response:\nAn antonym of 'complicated' is 'simple'."
    assert ds[1] == tokenizer.encode(text)


# --- collate -------------------------------------------------------------------------------------------------------


def test_collate_book_toy_batch_exact():
    inputs, targets = custom_collate_fn(([0, 1, 2, 3, 4], [5, 6], [7, 8, 9]))
    assert inputs.tolist() == [[0, 1, 2, 3, 4], [5, 6, 50256, 50256, 50256], [7, 8, 9, 50256, 50256]]
    assert targets.tolist() == [[1, 2, 3, 4, 50256], [6, 50256, -100, -100, -100], [8, 9, 50256, -100, -100]]
    assert inputs.dtype == targets.dtype == torch.int64


def test_collate_masks_all_padding_but_the_first_end_of_text():
    inputs, targets = custom_collate_fn([[11] * 10, [12, 13], [14]], pad_token_id=0, ignore_index=-1)
    assert inputs.shape == targets.shape == (3, 10)
    assert targets[1].tolist() == [13, 0] + [-1] * 8
    assert targets[2].tolist() == [0] + [-1] * 9
    assert (targets[0] != -1).all()  # the longest entry keeps every target, its end-of-text last
    assert targets[0, -1].item() == 0


def test_collate_truncates_to_allowed_length():
    inputs, targets = custom_collate_fn([list(range(20)), [5, 6]], allowed_max_length=8)
    assert inputs.shape == targets.shape == (2, 8)
    assert inputs[0].tolist() == list(range(8)) and targets[0].tolist() == list(range(1, 9))
    assert targets[1].tolist() == [6, 50256] + [-100] * 6


def test_masked_targets_do_not_count_in_the_loss():
    model = tiny_model()
    inputs, targets = custom_collate_fn([[1, 2, 3, 4, 5, 6], [7, 8]])
    with torch.no_grad():
        loss = calc_loss_batch(inputs, targets, model, "cpu")
        logits = model(inputs)
    keep = targets != -100
    manual = torch.nn.functional.cross_entropy(logits[keep], targets[keep])
    assert torch.allclose(loss, manual)
    assert keep.sum().item() == 6 + 2  # 5 + 1 end-of-text, then 1 + 1 end-of-text


# --- ROUGE-L -------------------------------------------------------------------------------------------------------


def test_lcs_length_exact():
    assert lcs_length("ABCBDAB", "BDCABA") == 4  # the textbook example
    assert lcs_length([], ["a"]) == 0
    assert lcs_length(["a", "b", "c"], ["a", "b", "c"]) == 3


def test_rouge_l_hand_made_pairs():
    assert rouge_l_f1("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    assert rouge_l_f1("a b c d", "a c") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert rouge_l_f1("Jane Austen.", "jane austen") == 1.0  # case and punctuation do not count
    assert rouge_l_f1("c b a", "a b c") == pytest.approx(1 / 3)  # order matters: LCS 1
    assert rouge_l_f1("nothing alike", "different words") == 0.0
    assert rouge_l_f1("", "some reference") == 0.0
    assert rouge_l_f1("", "") == 1.0


# --- responses -----------------------------------------------------------------------------------------------------


def test_prompt_longer_than_context_is_truncated_with_a_warning(tokenizer):
    model = tiny_model(context_length=32)
    entry = {"instruction": "word " * 60, "input": "", "output": "x"}
    with pytest.warns(UserWarning, match="context is 32"):
        response = generate_response(model, entry, tokenizer, context_size=32, max_new_tokens=5)
    assert isinstance(response, str)


@pytest.mark.parametrize("max_new_tokens", [1, 2])
def test_response_of_one_or_two_tokens(tokenizer, max_new_tokens):
    response = generate_response(tiny_model(), ENTRY_NO_INPUT, tokenizer, context_size=64, max_new_tokens=max_new_tokens)
    assert isinstance(response, str)


def test_responses_are_saved_as_they_come_and_a_rerun_resumes(tokenizer, tmp_path, monkeypatch):
    model = tiny_model()
    entries = [dict(ENTRY_WITH_INPUT, instruction=f"Task {i}.") for i in range(4)]
    path = tmp_path / "with-response.json"
    calls = []

    def fake(model, entry, tokenizer, **kwargs):
        if len(calls) == 2 and not getattr(fake, "healed", False):
            raise KeyboardInterrupt  # the run is interrupted on the third entry
        calls.append(entry["instruction"])
        return f"answer to {entry['instruction']}"

    monkeypatch.setattr(instruct, "generate_response", fake)
    with pytest.raises(KeyboardInterrupt):
        generate_responses(model, entries, tokenizer, path, context_size=64, progress=False)
    saved = json.loads(path.read_text())
    assert [e.get("model_response") for e in saved] == ["answer to Task 0.", "answer to Task 1.", None, None]
    assert not list(tmp_path.glob("*.tmp"))

    fake.healed = True
    results = generate_responses(model, entries, tokenizer, path, context_size=64, progress=False)
    assert calls == ["Task 0.", "Task 1.", "Task 2.", "Task 3."]  # nothing generated twice
    assert [r["model_response"] for r in results] == [f"answer to Task {i}." for i in range(4)]
    assert json.loads(path.read_text()) == results

    with torch.no_grad():  # other weights: the saved responses are not theirs, so all are generated again
        model.out_head.weight.add_(1.0)
    generate_responses(model, entries, tokenizer, path, context_size=64, progress=False)
    assert len(calls) == 8


# --- the Ollama judge against a fake server ------------------------------------------------------------------------


class FakeOllama(http.server.BaseHTTPRequestHandler):
    mode = "ok"
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        self._send(200, b'{"models": []}')

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        mode = type(self).mode
        if mode == "error":
            self._send(500, b'{"error": "llama runner process has terminated"}')
        elif mode == "malformed":
            self._send(200, b"this is not json\n")
        elif mode == "words":
            self._send(200, json.dumps({"message": {"content": "I would say eighty"}}).encode())
        else:  # streamed like Ollama: one JSON object per line
            lines = [{"message": {"content": "8"}, "done": False}, {"message": {"content": "5"}, "done": True}]
            self._send(200, "\n".join(json.dumps(x) for x in lines).encode() + b"\n")

    def _send(self, status, payload):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture
def fake_ollama():
    FakeOllama.mode, FakeOllama.requests = "ok", []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), FakeOllama)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


ENTRY_WITH_RESPONSE = dict(ENTRY_WITH_INPUT, model_response="Occasion")


def test_ollama_success_sends_the_books_request(fake_ollama):
    assert ollama_reachable(fake_ollama)
    assert query_ollama("score this", url=fake_ollama) == "85"
    path, body = FakeOllama.requests[0]
    assert path == "/api/chat"
    assert body["model"] == "llama3" and body["messages"] == [{"role": "user", "content": "score this"}]
    assert body["options"]["seed"] == 123 and body["options"]["temperature"] == 0
    assert judge_scores([ENTRY_WITH_RESPONSE] * 2, url=fake_ollama, progress=False) == [85, 85]
    assert FakeOllama.requests[1][1]["messages"][0]["content"] == judge_prompt(ENTRY_WITH_RESPONSE)


def test_judge_prompt_is_the_books():
    assert judge_prompt(ENTRY_WITH_RESPONSE) == (
        f"Given the input `{format_input(ENTRY_WITH_INPUT)}` and correct output `The correct spelling is 'Occasion.'`, "
        "score the model response `Occasion` on a scale from 0 to 100, where 100 is the best score. "
        "Respond with the integer number only."
    )


def test_ollama_http_error_is_clear_and_judge_skips(fake_ollama, capsys):
    FakeOllama.mode = "error"
    with pytest.raises(OllamaError, match="HTTP 500.*runner process"):
        query_ollama("x", url=fake_ollama)
    assert judge_scores([ENTRY_WITH_RESPONSE] * 3, url=fake_ollama, progress=False) == [None, None, None]
    assert capsys.readouterr().out.count("skipped entry") == 3


def test_ollama_malformed_json_is_clear_and_judge_skips(fake_ollama, capsys):
    FakeOllama.mode = "malformed"
    with pytest.raises(OllamaError, match="not a chat message"):
        query_ollama("x", url=fake_ollama)
    assert judge_scores([ENTRY_WITH_RESPONSE], url=fake_ollama, progress=False) == [None]
    FakeOllama.mode = "words"
    assert judge_scores([ENTRY_WITH_RESPONSE], url=fake_ollama, progress=False) == [None]
    assert "could not convert score 'I would say eighty'" in capsys.readouterr().out


def test_ollama_unreachable(tmp_path):
    url = closed_port_url()
    assert not ollama_reachable(url, timeout=1)
    with pytest.raises(OllamaError, match="no Ollama server.*ollama serve"):
        query_ollama("x", url=url)
    with pytest.raises(OllamaError, match="no Ollama server"):
        judge_scores([ENTRY_WITH_RESPONSE], url=url, progress=False)


# --- end to end ----------------------------------------------------------------------------------------------------


def test_tiny_finetune_then_generate_and_save(tokenizer, tmp_path):
    data = load_instruction_data(fetch("instruction-data"))
    train, test, val = split_data(data)
    model = tiny_model()
    collate = lambda batch: custom_collate_fn(batch, allowed_max_length=64)  # noqa: E731
    torch.manual_seed(123)
    train_loader = torch.utils.data.DataLoader(InstructionDataset(train[:8], tokenizer), batch_size=4,
                                               shuffle=True, drop_last=True, collate_fn=collate)
    val_loader = torch.utils.data.DataLoader(InstructionDataset(val[:4], tokenizer), batch_size=4, collate_fn=collate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.1)
    before = [p.detach().clone() for p in model.parameters()]
    train_losses, val_losses, tokens_seen = train_model_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=1, eval_freq=1, eval_iter=1,
        start_context=None, tokenizer=None, progress=False,
    )
    assert len(train_losses) == len(val_losses) == 2 and all(torch.isfinite(torch.tensor(train_losses)))
    assert tokens_seen[-1] > tokens_seen[0] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))

    path = tmp_path / "instruction-data-with-response.json"
    results = generate_responses(model, test[:2], tokenizer, path, context_size=64, max_new_tokens=4, progress=False)
    saved = json.loads(path.read_text())
    assert saved == results and len(saved) == 2
    assert all(isinstance(e["model_response"], str) for e in saved)
    assert saved[0]["instruction"] == test[0]["instruction"] and saved[0]["output"] == test[0]["output"]
    assert 0.0 <= rouge_l_f1(saved[0]["model_response"], saved[0]["output"]) <= 1.0
