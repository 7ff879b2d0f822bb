"""Test-session setup only: smoke mode, an offline tiktoken cache and a local asset mirror.

With `../shared/data` beside the repository (CI), tiktoken's BPE files come from a cache filled from it
and every `utils.assets.fetch` tries a server on 127.0.0.1 serving that folder first. Without it (a reader's
laptop) nothing here is set up and the same tests use the internet, as the notebooks do.
"""

import atexit
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# tiktoken caches each file under the sha1 of its URL (see ../shared/data/SOURCES.md)
TIKTOKEN_CACHE_NAMES = {
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}

os.environ["LLM_SMOKE"] = "1"
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads starve the
# thread doing the work (bench/speed.py measured cached generation 5-10x slower without this).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _setup_offline():
    bpe = SHARED_DATA / "gpt2-bpe"
    if bpe.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache = Path(tempfile.mkdtemp(prefix="tiktoken-cache-"))
        atexit.register(shutil.rmtree, cache, True)  # one per session; gone when the session ends
        for name, cached in TIKTOKEN_CACHE_NAMES.items():
            shutil.copyfile(bpe / name, cache / cached)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    if SHARED_DATA.is_dir() and "LLM_ASSET_MIRROR" not in os.environ:
        handler = functools.partial(_QuietHandler, directory=str(SHARED_DATA))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ["LLM_ASSET_MIRROR"] = f"http://127.0.0.1:{server.server_address[1]}"


_setup_offline()
