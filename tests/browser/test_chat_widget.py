"""Chapter 9's chat widget in a real browser: JupyterLab + headless Chromium run the notebook in its quick setting,
then a person's session: two messages, the reply growing while it is generated, the prompt switch showing the first
turn inside the second prompt, Stop mid-reply, New chat. A screenshot lands in tests/browser/screenshots/.
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
const box = [...document.querySelectorAll('.jp-OutputArea-output .widget-vbox')].find(
  b => [...b.querySelectorAll('button')].some(x => x.textContent.trim() === 'New chat'));
if (!box) return null;
const transcript = box.querySelector('.chat-transcript textarea'), prompt = box.querySelector('.chat-prompt textarea');
return {transcript: transcript.value, prompt: prompt.value, promptShown: prompt.offsetParent !== null,
        status: box.querySelector('.chat-status').textContent};
"""
JS_TYPE = """
const box = [...document.querySelectorAll('.jp-OutputArea-output .widget-vbox')].pop();
const input = box.querySelector('.widget-text input');
input.value = arguments[0];
input.dispatchEvent(new Event('input', {bubbles: true}));
input.dispatchEvent(new Event('change', {bubbles: true}));
return true;
"""
JS_CLICK = """
const box = [...document.querySelectorAll('.jp-OutputArea-output .widget-vbox')].pop();
const target = arguments[0] === 'checkbox' ? box.querySelector('.widget-checkbox input')
  : [...box.querySelectorAll('button')].find(b => b.textContent.trim() === arguments[0]);
target.scrollIntoView({block: 'center'});
target.click();
return true;
"""


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

        def send(text):
            driver.js(JS_TYPE, text)
            time.sleep(0.3)  # the typed value reaches the kernel before the click
            driver.js(JS_CLICK, "Send")

        def reply_lengths(until):
            """Lengths of the transcript seen while a reply is written, until `until(transcript)`."""
            seen = []
            end = time.monotonic() + min(60, deadline.left())
            while time.monotonic() < end:
                transcript = driver.js(JS_WIDGET)["transcript"]
                if not seen or seen[-1] != len(transcript):
                    seen.append(len(transcript))
                if until(transcript):
                    return seen, transcript
                time.sleep(0.05)
            pytest.fail(f"the reply did not finish; transcript: {driver.js(JS_WIDGET)['transcript']!r}")

        send("Hello there")
        lengths, transcript = reply_lengths(lambda t: t.count("You:") == 1 and t.endswith("\n\n"))
        assert len(lengths) >= 4, f"the reply did not grow token by token: transcript lengths seen {lengths}"
        first_reply = transcript.split("Model: ", 1)[1].rstrip("\n")
        assert first_reply

        send("Second message")
        reply_lengths(lambda t: t.count("You:") == 2 and t.endswith("\n\n"))
        driver.js(JS_CLICK, "checkbox")
        widget = deadline.wait_for("the prompt to show", lambda: (w := driver.js(JS_WIDGET))["promptShown"] and w, 10)
        prompt = widget["prompt"]
        assert f"### Instruction:\nHello there\n\n### Response:\n{first_reply}" in prompt, prompt
        assert prompt.rstrip().endswith("### Instruction:\nSecond message\n\n### Response:") or "Second message" in prompt

        send("A third one, to be stopped")
        reply_lengths(lambda t: t.count("You:") == 3 and len(t.rsplit("Model: ", 1)[1]) >= 5)
        driver.js(JS_CLICK, "Stop")
        reply_lengths(lambda t: t.endswith(" [stopped]\n\n"))  # only a reply still being written is marked stopped
        driver.screenshot(SCREENSHOTS / "09_chat_widget.png")

        driver.js(JS_CLICK, "New chat")
        # the widget's values reach the browser one by one: wait for the whole new-chat state
        deadline.wait_for("a new chat", lambda: (w := driver.js(JS_WIDGET))["transcript"] == ""
                          and w["status"] == "(new chat)" and w, 10)
        send("Fresh start")
        reply_lengths(lambda t: t.count("You:") == 1 and t.endswith("\n\n"))
        driver.js(JS_CLICK, "checkbox")
        driver.js(JS_CLICK, "checkbox")
        prompt = deadline.wait_for("the new prompt", lambda: "Fresh start" in (p := driver.js(JS_WIDGET)["prompt"]) and p, 10)
        assert "Hello there" not in prompt, "New chat kept the old conversation"
