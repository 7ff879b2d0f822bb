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
