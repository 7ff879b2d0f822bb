"""JupyterLab + headless Chromium for the browser tests: start both, open a notebook copy, run all its cells.

Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`); tests skip without them.
Chromium is driven through chromedriver's W3C WebDriver HTTP API with the standard library (no selenium, so no
driver or browser is ever downloaded). JupyterLab runs on 127.0.0.1 with a token, on a temporary root that links the
repository's files and holds a *copy* of the notebook, so the committed notebook is never touched.
Screenshots land in tests/browser/screenshots/ (git-ignored).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
TEST_BUDGET_S = 170  # the whole test, start-up and teardown included, stays under 3 minutes

# Chromium on a closed network: no background connections, no sandbox (CI runs as root), no GPU.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--window-size=1400,1000",
]

# User settings for the temporary lab: no news/update checks (offline), no notifications over the notebook.
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false", "checkForUpdates": False},
}

needs_chromium = pytest.mark.skipif(
    not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
    reason="browser test needs Debian's chromium and chromium-driver "
    "(sudo apt-get install chromium chromium-driver); not installed here",
)


class Deadline:
    """One time budget for the whole test; every wait draws on it."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()

    def wait_for(self, what: str, check, limit: float | None = None, every: float = 0.25):
        """Poll `check()` until it returns something truthy; fail naming `what` when time runs out."""
        end = time.monotonic() + min(limit or self.left(), self.left())
        last = None
        while time.monotonic() < end:
            try:
                last = check()
            except (OSError, urllib.error.URLError, WebDriverError) as exc:  # not up yet
                last = exc
            else:
                if last:
                    return last
            time.sleep(every)
        pytest.fail(f"timed out waiting for {what} (last seen: {last!r})")


class WebDriverError(RuntimeError):
    pass


class WebDriver:
    """The few W3C WebDriver calls this test needs, over HTTP to a local chromedriver."""

    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def _call(self, method: str, path: str, payload=None, timeout: float = 30):
        data = None if payload is None else json.dumps(payload).encode()
        url = self.base + (f"/session/{self.session}" if self.session else "") + path
        request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.load(response)["value"]
        except urllib.error.HTTPError as exc:
            raise WebDriverError(f"{method} {path}: {exc.read().decode(errors='replace')[:500]}") from None

    def start(self, user_data_dir: Path):
        options = {"binary": CHROMIUM, "args": [*CHROMIUM_ARGS, f"--user-data-dir={user_data_dir}"]}
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}}
        self.session = self._call("POST", "/session", caps, timeout=60)["sessionId"]

    def get(self, url: str):
        self._call("POST", "/url", {"url": url}, timeout=60)

    def js(self, script: str, *args):
        return self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    def find(self, css: str) -> str:
        """The first element matching `css` (a WebDriver element id), for real key presses and clicks."""
        return next(iter(self._call("POST", "/element", {"using": "css selector", "value": css}).values()))

    def send_keys(self, element: str, text: str):
        """Type `text` into `element` key by key, as a person does ("\ue007" is the Enter key)."""
        self._call("POST", f"/element/{element}/value", {"text": text})

    def click(self, element: str):
        self._call("POST", f"/element/{element}/click", {})

    def screenshot(self, path: Path):
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def quit(self):
        if self.session:
            try:
                self._call("DELETE", "", timeout=15)
            finally:
                self.session = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200


def _stop(proc: subprocess.Popen | None, grace: float = 10):
    """End `proc`, everything it started (kernels, browser processes) and its process group."""
    if proc is None:
        return
    try:
        import psutil  # comes with ipykernel

        family = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except Exception:
        family = []
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for p in family:  # kernels start in their own session, so the group kill below would miss them
        try:
            p.kill()
        except Exception:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait(5)


def make_lab_root(tmp: Path, notebook: Path) -> Path:
    """A lab root whose top-level entries link to the repository's, but for notebooks/, which holds a copy of `notebook`
    beside links to the other entries of notebooks/ (its data/ folder included).

    The notebook runs with cwd = <root>/notebooks, so `..`-relative paths (utils, data) resolve as in the repository.
    """
    root = tmp / "lab"
    root.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in {"notebooks", ".git", ".venv", "venv"}:
            (root / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    (root / "notebooks").mkdir()
    for entry in notebook.parent.iterdir():  # notebooks/data (the chapters' own files) and the rest, as links
        if entry.name != notebook.name and not entry.name.startswith("."):
            (root / "notebooks" / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
    shutil.copyfile(notebook, root / "notebooks" / notebook.name)
    return root


def start_lab(root: Path, tmp: Path, port: int, token: str, log) -> subprocess.Popen:
    settings = tmp / "lab-settings"
    for name, values in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    env = dict(os.environ)  # conftest's TIKTOKEN_CACHE_DIR, LLM_ASSET_MIRROR and LLM_SMOKE reach the kernel
    env.pop("MPLBACKEND", None)  # conftest's Agg would hide the figures: the kernel picks inline, as for a reader
    env.update(
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
    )
    cmd = [
        sys.executable, "-m", "jupyter", "lab", "--no-browser",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run commands and read kernel state
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    return subprocess.Popen(cmd, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


# JavaScript run in the page (through window.jupyterapp, exposed by --LabApp.expose_app_in_browser).
# The notebook's panel: the shell's current widget, or (JupyterLab 4.6 in a headless browser, where no widget has
# focus and currentWidget is null) the main-area widget with a kernel session.
NOTEBOOK_PANEL = ("(window.jupyterapp.shell.currentWidget"
                  " || Array.from(window.jupyterapp.shell.widgets('main')).find(w => w.sessionContext))")
JS_NOTEBOOK_READY = """
const dialog = document.querySelector('.jp-Dialog');
if (dialog && /Select Kernel/.test(dialog.textContent)) {  // a notebook without kernelspec metadata asks first
  const accept = dialog.querySelector('.jp-Dialog-button.jp-mod-accept');
  if (accept) accept.click();
  return null;
}
const app = window.jupyterapp;
const w = app && NOTEBOOK_PANEL;
if (w && app.shell.currentWidget !== w) app.shell.activateById(w.id);  // headless Chromium has no focus to set it
if (!w || !w.content || !w.sessionContext || !w.context.isReady) return null;
const kernel = w.sessionContext.session && w.sessionContext.session.kernel;
const cells = document.querySelectorAll('.jp-Notebook .jp-Cell').length;
return kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected' && cells > 0 ? cells : null;
""".replace("NOTEBOOK_PANEL", NOTEBOOK_PANEL)
JS_CLEAR_ALL = "window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs'); return true;"
JS_RUN_ALL = "window.jupyterapp.commands.execute('notebook:run-all-cells'); return true;"
JS_STATE = """
const w = NOTEBOOK_PANEL;
const out = {kernel: w.sessionContext.session.kernel.status, code: 0, executed: 0, running: 0, queued: 0,
             errors: [], texts: [], images: 0};
w.content.widgets.forEach((cell, i) => {
  const model = cell.model;
  if (model.type !== 'code') return;
  out.code += 1;
  if (model.executionCount) out.executed += 1;
  if (model.executionState === 'running') out.running += 1;
  const prompt = cell.node.querySelector('.jp-InputPrompt');
  if (prompt && prompt.textContent.includes('*')) out.queued += 1;
  const allowed = (model.getMetadata('tags') || []).includes('raises-exception');
  for (let j = 0; j < model.outputs.length; j++) {
    const o = model.outputs.get(j).toJSON();
    if (o.output_type === 'error' && !allowed) out.errors.push(`cell ${i}: ${o.ename}: ${o.evalue}`);
  }
  for (const node of cell.node.querySelectorAll('.jp-OutputArea-output')) {
    const text = node.textContent || '';
    out.texts.push(text);
    if (node.dataset.mimeType === 'application/vnd.jupyter.stderr' && /Traceback|Error:/.test(text) && !allowed)
      out.errors.push(`cell ${i} shows: ` + text.slice(0, 300));
    for (const img of node.querySelectorAll('img')) if (img.complete && img.naturalWidth > 0) out.images += 1;
  }
});
return out;
""".replace("NOTEBOOK_PANEL", NOTEBOOK_PANEL)
JS_SCROLL_TO_FIRST_FIGURE = """
const img = document.querySelector('.jp-Notebook .jp-OutputArea-output img');
if (img) img.scrollIntoView({block: 'center'});
return !!img;
"""


class Lab:
    """What a test gets inside `notebook_in_lab`: the driver, the time budget, and timings so far."""

    def __init__(self, driver: WebDriver, deadline: Deadline, timings: dict, t0: float):
        self.driver, self.deadline, self.timings, self.t0 = driver, deadline, timings, t0

    def run_all(self) -> dict:
        """Clear the copy's committed outputs, run all cells, wait until done; return what the page shows."""
        driver, deadline = self.driver, self.deadline
        # The copy opens with its committed outputs: clear them (and the execution counts) so that whatever
        # is shown afterwards comes from this run.
        driver.js(JS_CLEAR_ALL)
        deadline.wait_for(
            "the committed outputs to clear", lambda: (s := driver.js(JS_STATE))["executed"] == 0 and not s["texts"], 20
        )
        driver.js(JS_RUN_ALL)

        # Done when every code cell has run (or run-all stopped at an error) and the kernel is idle again.
        def finished():
            state = driver.js(JS_STATE)
            done = state["kernel"] == "idle" and state["queued"] == 0 and state["running"] == 0
            return state if done and (state["executed"] == state["code"] or state["errors"]) else None

        time.sleep(0.5)  # let the run-all command queue the cells
        state = deadline.wait_for("all cells to run", finished, every=0.5)
        self.timings["ran_s"] = time.monotonic() - self.t0
        return state


@contextlib.contextmanager
def notebook_in_lab(notebook: Path, screenshot: Path, budget: float = TEST_BUDGET_S):
    """Open `notebook` (a copy) in JupyterLab in headless Chromium and yield a `Lab`; on a failure a screenshot
    `<screenshot>-failure.png` and the tail of the lab's log are kept; everything started is stopped at the end."""
    deadline = Deadline(budget)
    timings = {}
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lab-browser-test-"))
    lab = driver_proc = None
    driver = None
    lab_log = open(tmp / "jupyter-lab.log", "w+")
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        root = make_lab_root(tmp, notebook)
        lab_port, driver_port, token = _free_port(), _free_port(), secrets.token_hex(16)
        lab = start_lab(root, tmp, lab_port, token, lab_log)
        driver_proc = subprocess.Popen(
            [CHROMEDRIVER, f"--port={driver_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        base = f"http://127.0.0.1:{lab_port}"
        deadline.wait_for("chromedriver to start", lambda: _http_ok(f"http://127.0.0.1:{driver_port}/status"), 30)
        driver = WebDriver(driver_port)
        driver.start(tmp / "chromium-profile")

        def lab_up():
            if lab.poll() is not None:
                pytest.fail(f"jupyter lab exited with code {lab.returncode} before answering (log below)")
            return _http_ok(f"{base}/api/status?token={token}")

        deadline.wait_for("jupyter lab to answer", lab_up, 60)
        timings["started_s"] = time.monotonic() - t0

        driver.get(f"{base}/lab/tree/notebooks/{notebook.name}?reset&token={token}")
        deadline.wait_for("the notebook to open with an idle kernel", lambda: driver.js(JS_NOTEBOOK_READY), 120)
        timings["opened_s"] = time.monotonic() - t0
        yield Lab(driver, deadline, timings, t0)
    except BaseException:
        if driver is not None and driver.session:
            try:
                driver.screenshot(screenshot.with_name(screenshot.stem + "-failure.png"))
            except Exception:
                pass
        lab_log.flush()
        lab_log.seek(0)
        print("jupyter lab log (tail):\n" + lab_log.read()[-3000:])
        raise
    finally:
        if driver is not None:
            try:
                driver.quit()
            except Exception:
                pass
        _stop(driver_proc, grace=5)
        _stop(lab, grace=10)
        lab_log.close()
        shutil.rmtree(tmp, ignore_errors=True)
        timings["total_s"] = time.monotonic() - t0


def run_notebook_in_lab(notebook: Path, screenshot: Path, budget: float = TEST_BUDGET_S) -> dict:
    """Open `notebook` (a copy) in JupyterLab in headless Chromium, run all cells, return what the page shows."""
    with notebook_in_lab(notebook, screenshot, budget) as lab:
        state = lab.run_all()
        if state["images"] == 0:  # images decode asynchronously: give them a moment
            state = (
                lab.deadline.wait_for("a figure to render", lambda: (s := lab.driver.js(JS_STATE))["images"] and s, 10)
                or state
            )
        lab.driver.js(JS_SCROLL_TO_FIRST_FIGURE)
        time.sleep(0.3)
        lab.driver.screenshot(screenshot)
        state["timings"] = lab.timings
    return state
