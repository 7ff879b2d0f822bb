"""Chapter 9's chat widget in a real browser: JupyterLab + headless Chromium run the notebook in its quick setting,
then a person's session, typed key by key: an empty Enter, two messages sent with Enter, the reply growing while it is
generated with Send off and "writing... N tokens/s" shown, a second message refused while a reply is written (its text
kept), a long message and the log following the newest, the prompt switch showing the first turn inside the second
prompt, Stop mid-reply, New chat, and Send by mouse. A screenshot lands in tests/browser/screenshots/.
"""

from __future__ import annotations

import time

import pytest
from browserlab import NOTEBOOK_PANEL, ROOT, SCREENSHOTS, needs_chromium, notebook_in_lab

pytestmark = needs_chromium

NOTEBOOK = "09_chat.ipynb"
# The quick setting's tiny model answers in a blink; slowed down a little (in the kernel, after the notebook ran),
# its reply grows slowly enough for the page to be seen between tokens.
SLOW_DOWN = """
import time as _time
_forward = model.forward
model.forward = lambda *args, **kwargs: (_time.sleep(0.15), _forward(*args, **kwargs))[1]
"""
JS_EXECUTE = """
const kernel = NOTEBOOK_PANEL.sessionContext.session.kernel;
window.__executed = false;
kernel.requestExecute({code: arguments[0]}).done.then(() => { window.__executed = true; });
return true;
""".replace("NOTEBOOK_PANEL", NOTEBOOK_PANEL)
JS_WIDGET = """
const box = [...document.querySelectorAll('.jp-OutputArea-output .chat-widget')].pop();
if (!box) return null;
const log = box.querySelector('.chat-log'), prompt = box.querySelector('.chat-prompt');
return {messages: [...log.querySelectorAll('.chat-msg')].map(m => m.textContent),
        userMessages: log.querySelectorAll('.chat-user').length,
        lastText: (log.querySelector('.chat-msg:last-child .chat-text') || {}).textContent,
        status: box.querySelector('.chat-status').textContent, input: box.querySelector('.chat-input').value,
        sendDisabled: box.querySelector('.chat-send').disabled, prompt: prompt.textContent,
        promptShown: prompt.offsetParent !== null,
        overflow: log.scrollHeight - log.clientHeight, fromBottom: log.scrollHeight - log.scrollTop - log.clientHeight};
"""
JS_CLICK = """
const box = [...document.querySelectorAll('.jp-OutputArea-output .chat-widget')].pop();
const target = arguments[0] === 'checkbox' ? box.querySelector('.chat-toggle input')
  : [...box.querySelectorAll('button')].find(b => b.textContent.trim() === arguments[0]);
target.scrollIntoView({block: 'center'});
target.click();
return true;
"""
JS_SET_INPUT = """
const input = [...document.querySelectorAll('.jp-OutputArea-output .chat-widget .chat-input')].pop();
input.value = arguments[0];
return true;
"""
ENTER = "\ue007"
INPUT = ".jp-OutputArea-output .chat-widget .chat-input"


def test_chat_widget_in_jupyterlab():
    notebook = ROOT / "notebooks" / NOTEBOOK
    if not notebook.exists():
        pytest.skip(f"notebooks/{NOTEBOOK} is not in this checkout")
    with notebook_in_lab(notebook, SCREENSHOTS / "09_chat_widget.png", budget=400) as lab:
        driver, deadline = lab.driver, lab.deadline
        state = lab.run_all()
        assert not state["errors"], "cells show errors in JupyterLab:\n" + "\n".join(state["errors"])
        assert state["executed"] == state["code"], f"only {state['executed']} of {state['code']} code cells ran"
        deadline.wait_for("the chat widget to render", lambda: driver.js(JS_WIDGET), 30)
        driver.js(JS_EXECUTE, SLOW_DOWN)
        deadline.wait_for("the kernel to slow the model down", lambda: driver.js("return window.__executed;"), 30)
        box = driver.find(INPUT)

        def widget():
            return driver.js(JS_WIDGET)

        def wait_until(what, check, limit=60):
            return deadline.wait_for(what, lambda: (w := widget()) and check(w) and w, limit, every=0.05)

        def reply_while_writing(user_messages):
            """Wait for the reply to message `user_messages`; return the distinct reply lengths seen while written."""
            lengths, seen_writing = [], False
            end = time.monotonic() + min(60, deadline.left())
            while time.monotonic() < end:
                w = widget()
                if w["sendDisabled"]:
                    seen_writing = seen_writing or "writing..." in w["status"]
                    if not lengths or lengths[-1] != len(w["lastText"]):
                        lengths.append(len(w["lastText"]))
                elif w["userMessages"] == user_messages and len(w["messages"]) == 2 * user_messages:
                    assert seen_writing, f"no 'writing... N tokens/s' while the reply was written: {w['status']!r}"
                    return lengths, w
                time.sleep(0.05)
            pytest.fail(f"the reply did not finish; widget: {widget()!r}")

        driver.send_keys(box, ENTER)  # an empty message: refused, nothing added
        w = wait_until("the empty message to be refused", lambda w: "empty message ignored" in w["status"], 10)
        assert w["messages"] == []

        driver.send_keys(box, "Tell me about the sea." + ENTER)
        lengths, w = reply_while_writing(1)
        assert len(lengths) >= 4, f"the reply did not grow token by token: lengths seen {lengths}"
        assert w["messages"][0] == "YouTell me about the sea." and w["input"] == ""
        first_reply = w["lastText"]
        assert first_reply

        driver.send_keys(box, "Second message" + ENTER)
        wait_until("the second reply to start", lambda w: w["sendDisabled"], 10)
        driver.send_keys(box, "not yet" + ENTER)  # refused while the reply is written; the text stays in the box
        w = wait_until("the double send to be refused", lambda w: "still being written" in w["status"], 10)
        assert w["input"] == "not yet" and w["userMessages"] == 2
        reply_while_writing(2)
        driver.js(JS_CLICK, "checkbox")
        prompt = wait_until("the prompt to show", lambda w: w["promptShown"], 10)["prompt"]
        assert 0 <= prompt.index("Tell me about the sea.") < prompt.index(first_reply) < prompt.index("Second message"), prompt

        driver.js(JS_SET_INPUT, "")
        driver.js(JS_SET_INPUT, "A long message. " * 60)
        driver.send_keys(box, ENTER)
        _, w = reply_while_writing(3)
        assert w["overflow"] > 0 and w["fromBottom"] <= 2, f"the log does not follow the newest message: {w}"

        driver.send_keys(box, "A fourth one, to be stopped" + ENTER)
        wait_until("the reply to be under way", lambda w: w["sendDisabled"] and len(w["lastText"]) >= 5)
        driver.js(JS_CLICK, "Stop")
        w = wait_until("the stopped reply", lambda w: not w["sendDisabled"] and w["messages"][-1].endswith("[stopped]"))
        assert w["userMessages"] == 4 and w["fromBottom"] <= 2
        driver.screenshot(SCREENSHOTS / "09_chat_widget.png")

        driver.js(JS_CLICK, "New chat")
        wait_until("a new chat", lambda w: w["messages"] == [] and w["status"] == "(new chat)", 10)
        driver.send_keys(box, "Fresh start")
        driver.click(driver.find(".jp-OutputArea-output .chat-widget .chat-send"))  # Send by mouse
        _, w = reply_while_writing(1)
        assert "Fresh start" in w["prompt"] and "Tell me about the sea." not in w["prompt"], "New chat kept the old conversation"
