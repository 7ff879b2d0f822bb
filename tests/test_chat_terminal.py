"""`python -m utils.chat` in a pseudo-terminal, as a person types: two turns, /reset, Ctrl-C mid-reply, /quit."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch

from utils import GPTModel, save_checkpoint
from utils.chat import main

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(vocab_size=257, context_length=4096, emb_dim=16, n_heads=2, n_layers=1, drop_rate=0.0, qkv_bias=False)
REPLY_TOKENS = 2000  # long enough that Ctrl-C lands mid-reply


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny byte-level model that answers "aaaa..." and never ends its turn (its last hidden state is constant)."""
    torch.manual_seed(123)
    model = GPTModel(CFG)
    with torch.no_grad():
        model.final_norm.scale.zero_()
        model.final_norm.shift.copy_(torch.randn(16))
        model.out_head.weight[ord("a")] = 10 * model.final_norm.shift
    path = tmp_path_factory.mktemp("chat") / "tiny_chat.pth"
    save_checkpoint(path, model, config=CFG, tokenizer="bytes")
    return path


class Terminal:
    """A child process on a pseudo-terminal that is its controlling terminal, so Ctrl-C (byte 3) sends SIGINT."""

    def __init__(self, args):
        self.master, slave = pty.openpty()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            args, stdin=slave, stdout=slave, stderr=slave, cwd=ROOT, env=env, start_new_session=True,
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )  # fmt: skip
        os.close(slave)
        self.seen = ""

    def read_until(self, predicate, what, timeout=180):  # generous: a busy 2-core machine is slow
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if predicate(self.seen):
                return self.seen
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.seen += os.read(self.master, 65536).decode("utf-8", errors="replace")
                except OSError:  # the child closed the terminal
                    break
        assert predicate(self.seen), f"timed out waiting for {what}; the terminal shows:\n{self.seen[-2000:]}"
        return self.seen

    def type(self, text):
        os.write(self.master, text.encode())

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


def test_two_turns_reset_ctrl_c_and_quit_in_a_terminal(checkpoint):
    term = Terminal([sys.executable, "-m", "utils.chat", "--checkpoint", str(checkpoint),
                     "--max-new-tokens", str(REPLY_TOKENS), "--device", "cpu"])
    try:
        term.read_until(lambda s: s.count("you> ") == 1, "the first prompt")
        term.type("Hello there\n")
        term.read_until(lambda s: s.count("you> ") == 2, "the first reply")
        assert "model> " + "a" * REPLY_TOKENS in term.seen
        term.type("\n")  # an empty message: a note, no reply
        term.read_until(lambda s: "empty message ignored" in s and s.count("you> ") == 3, "the empty-message note")
        term.type("And again?\n")
        term.read_until(lambda s: s.count("you> ") == 4, "the second reply")
        assert "oldest 1 turn(s) were dropped" in term.seen and "model> (the conversation" not in term.seen  # own line
        term.type("/reset\n")
        term.read_until(lambda s: "(new conversation)" in s and s.count("you> ") == 5, "/reset")
        mark = len(term.seen)
        term.type("Tell me a long story\n")
        term.read_until(lambda s: "model> aaaaaaaaaa" in s[mark:], "the third reply to start")
        term.type("\x03")  # Ctrl-C, through the terminal's line discipline
        term.read_until(lambda s: "[stopped: the conversation goes on]" in s[mark:] and s.count("you> ") == 6, "Ctrl-C")
        stopped_reply = term.seen[mark:].split("model> ", 1)[1].split(" [stopped")[0].replace("^C", "")
        assert 0 < len(stopped_reply) < REPLY_TOKENS and set(stopped_reply) == {"a"}
        term.type("/quit\n")
        assert term.proc.wait(30) == 0
    finally:
        term.close()
    assert "Traceback" not in term.seen


def test_a_missing_checkpoint_says_which_chapter_makes_it(tmp_path, capsys):
    assert main(["--checkpoint", str(tmp_path / "ch09_chat_model.pth")]) == 2
    assert "chapter 9 (notebooks/09_chat.ipynb) writes it" in capsys.readouterr().err
    assert main(["--checkpoint", str(tmp_path / "ch07_instruction_model.pth")]) == 2
    assert "chapter 7 (notebooks/07_instruction_finetuning.ipynb) writes it" in capsys.readouterr().err


SMALL = {**CFG, "context_length": 256}


def small_checkpoint(tmp_path, **changes):
    """A tiny chat checkpoint of a 256-token model; `changes` go into what is saved (e.g. another tokenizer)."""
    torch.manual_seed(123)
    path = tmp_path / "small.pth"
    save_checkpoint(path, GPTModel(SMALL), **{"config": SMALL, "tokenizer": "bytes", **changes})
    return path


def classifier_checkpoint(tmp_path):
    """Chapter 6's classifier: a GPT whose output head has two rows."""
    model = GPTModel(SMALL)
    model.out_head = torch.nn.Linear(16, 2)
    return save_checkpoint(tmp_path / "classifier.pth", model, config=SMALL, tokenizer="bytes")


@pytest.mark.parametrize("make, args, says", [
    (lambda tmp: tmp, [], r"is a folder: give the checkpoint file in it \(.pth\), or --model"),
    (lambda tmp: (tmp / "notes.txt", (tmp / "notes.txt").write_text("hello"))[0], [], "is not a PyTorch checkpoint"),
    (classifier_checkpoint, [], "another shape: .*out_head.weight.*Not a chat model .*or use --model"),
    (lambda tmp: small_checkpoint(tmp, tokenizer=str(tmp / "gone")), [], "another tokenizer: there is no tokenizer .*gone"),
    (small_checkpoint, ["--top-k", "0"], "top_k must be a whole number >= 1"),
    (small_checkpoint, ["--top-p", "1.5"], "top_p must be above 0 and at most 1"),
    (small_checkpoint, ["--temperature", "-1"], "temperature must be 0 .greedy. or more"),
    (small_checkpoint, ["--context-length", "1000"], "longer than the model's context of 256 tokens .*: use at most 256"),
    (small_checkpoint, ["--system", "x" * 300], "the system message takes .* of the 256-token context"),
])
def test_bad_command_lines_say_what_to_do_in_one_line(tmp_path, capsys, make, args, says):
    import re

    assert main(["--checkpoint", str(make(tmp_path)), "--device", "cpu", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(says, err) and err.count("\n") == 1 and "Traceback" not in err, err


def test_an_offline_model_and_ctrl_c_while_loading_end_without_a_traceback(monkeypatch, capsys):
    from utils import llama
    from utils.assets import AssetUnavailable

    def offline(name):
        raise AssetUnavailable(f"could not fetch {name}: no network. Place the file in data/ by hand")

    monkeypatch.setattr(llama, "fetch", offline)
    assert main(["--model", "qwen3-0.6b", "--device", "cpu"]) == 2
    assert "error: could not fetch qwen3-0.6b-config: no network" in capsys.readouterr().err

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(llama, "fetch", interrupted)
    assert main(["--model", "qwen3-0.6b", "--device", "cpu"]) == 130
    assert "stopped while loading" in capsys.readouterr().err


def test_a_small_model_keeps_an_earlier_exchange_and_commands_never_reach_it(tmp_path, monkeypatch, capsys):
    typed = iter(["/help", "/what", "Hello", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": (print(prompt, end=""), next(typed))[1])
    assert main(["--checkpoint", str(small_checkpoint(tmp_path)), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "(replies of up to 64 tokens in the model's 256-token context" in out
    assert "/reset  starts a new conversation" in out and "(unknown command /what: /help lists" in out
    assert out.count("model> ") == 1


def test_smollm2_in_a_terminal_with_line_editing_history_and_commands():
    """The real model: arrow keys edit the line and recall the last one (readline), commands never reach the model."""
    term = Terminal([sys.executable, "-m", "utils.chat", "--model", "smollm2-135m", "--device", "cpu",
                     "--max-new-tokens", "30"])
    try:
        term.read_until(lambda s: s.count("you> ") == 1, "the first prompt")
        term.type("/hep\x1b[Dl\n")  # a typo mended with the left arrow: /help
        term.read_until(lambda s: s.count("starts a new conversation") == 1 and s.count("you> ") == 2, "/help")
        term.type("\x1b[A\n")  # the up arrow recalls /help
        term.read_until(lambda s: s.count("starts a new conversation") == 2 and s.count("you> ") == 3, "the history")
        term.type("/what\n")
        term.read_until(lambda s: "(unknown command /what: /help lists the commands)" in s and s.count("you> ") == 4,
                        "an unknown command")
        mark = len(term.seen)
        term.type("What is the capital of France?\n")
        term.read_until(lambda s: s[mark:].count("you> ") == 1, "the reply")
        assert "Paris" in term.seen[mark:].split("model> ", 1)[-1], term.seen[mark - 300:]
        term.type("/quit\n")
        assert term.proc.wait(30) == 0
    finally:
        term.close()
    assert "Traceback" not in term.seen and "^[[" not in term.seen
