"""The chat in a notebook: a small anywidget (chat_widget.js draws it in the browser, this class runs the model).

The browser sends each message whole, read from the box at the moment of Enter or Send, so what is sent is what was
typed. The reply is generated in a thread, so Stop is heard while the model works; the kernel stays idle meanwhile,
which is why the toolbar's interrupt does not reach it (the widget says so).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anywidget
import traitlets

HERE = Path(__file__).parent


class ChatWidget(anywidget.AnyWidget):
    """A chat: a log of messages that follows the newest, a box where Enter sends (Shift+Enter: a new line), Send,
    Stop, New chat, a status line ("writing... N tokens/s" while Send is off, notes appended), and a switch that shows
    the exact prompt the model received. `chat` is a `utils.chat.Chat`."""

    _esm = HERE / "chat_widget.js"
    _css = HERE / "chat_widget.css"
    messages = traitlets.List(traitlets.Dict()).tag(sync=True)  # finished turns: {"role": "user"|"assistant", "text"}
    reply = traitlets.Unicode("").tag(sync=True)  # the reply being written
    writing = traitlets.Bool(False).tag(sync=True)
    status = traitlets.Unicode("").tag(sync=True)
    prompt = traitlets.Unicode("").tag(sync=True)

    def __init__(self, chat, **kwargs):
        super().__init__(**kwargs)
        self.chat, self.stop, self.thread, self.notes = chat, threading.Event(), None, []
        self.chat.note = self.add_note
        self.on_msg(self._on_msg)

    def _on_msg(self, _widget, content, _buffers):
        """What the browser asks for: {"type": "send", "text": ...}, {"type": "stop"} or {"type": "new"}."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "send":
            self.on_send(str(content.get("text", "")))
        elif kind == "stop":
            self.stop.set()
        elif kind == "new":
            self.on_new()

    def add_note(self, text: str):
        """A note from the chat: added to the notes shown, never over the last one."""
        self.notes.append(text.strip())
        self.status = self.notes_and()

    def notes_and(self, *more: str) -> str:
        """The status line: every note so far, then `more`."""
        return " ".join([*self.notes, *more])

    def on_send(self, text: str):
        """Start a reply in a thread (one at a time): the message handler returns at once."""
        if self.thread is not None and self.thread.is_alive():
            self.status = self.notes_and("(a reply is still being written: wait, or press Stop)")
            return
        if not text.strip():
            self.status = "(empty message ignored: type something)"
            return
        self.notes, self.status = [], ""
        self.stop.clear()
        with self.hold_sync():
            self.messages = [*self.messages, {"role": "user", "text": text.strip()}]
            self.reply, self.writing = "", True
        self.thread = threading.Thread(target=self.run, args=(text,), daemon=True)
        self.thread.start()

    def run(self, text: str):
        """Stream the reply; the status says "writing... N tokens/s" until it ends, then the reply joins the log."""
        start, reply = time.perf_counter(), ""
        try:
            for count, piece in enumerate(self.chat.send(text, stop=self.stop), start=1):
                reply += piece
                speed = f"writing... {count / (time.perf_counter() - start):.1f} tokens/s"
                with self.hold_sync():
                    self.reply, self.status = reply, self.notes_and(speed)
                    if count == 1:
                        self.prompt = self.chat.last_prompt
        except Exception as exc:  # a thread's traceback would land in the kernel's log, out of the reader's sight
            self.add_note(f"(the reply failed: {type(exc).__name__}: {exc})")
        finally:
            with self.hold_sync():
                self.messages = [*self.messages, {"role": "assistant", "text": reply,
                                                  "stopped": self.stop.is_set()}]
                self.reply, self.writing, self.status = "", False, self.notes_and()
                self.prompt = self.chat.last_prompt

    def on_new(self):
        """Stop a reply being written, forget the conversation."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        self.chat.reset()
        self.notes = []
        with self.hold_sync():
            self.messages, self.reply, self.prompt, self.status = [], "", "", "(new chat)"
