"""The offline set-up shared by the tests (conftest.py) and tools/execute.py: tiktoken's files and an asset mirror.

With `../shared/data` beside the repository (CI), `use_shared_data()` fills a tiktoken cache from it and serves
the folder on 127.0.0.1 as LLM_ASSET_MIRROR, which every `utils.assets.fetch` tries first. Without it (a reader's
laptop) it does nothing and downloads use the internet. Importing this module changes nothing.
"""

from __future__ import annotations

import atexit
import functools
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

# tiktoken caches each file under the sha1 of its URL (see ../shared/data/SOURCES.md)
TIKTOKEN_CACHE_NAMES = {
    "vocab.bpe": "6d1cbeee0f20b3d9449abfede4726ed8212e3aee",
    "encoder.json": "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6",
}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def use_shared_data(shared: Path = SHARED_DATA) -> None:
    """Point tiktoken and utils.assets at the offline copies in `shared` (unless already set); no-op without it."""
    bpe = shared / "gpt2-bpe"
    if bpe.is_dir() and "TIKTOKEN_CACHE_DIR" not in os.environ:
        cache = Path(tempfile.mkdtemp(prefix="tiktoken-cache-"))
        atexit.register(shutil.rmtree, cache, True)  # one per process; gone when it ends
        for name, cached in TIKTOKEN_CACHE_NAMES.items():
            shutil.copyfile(bpe / name, cache / cached)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    if shared.is_dir() and "LLM_ASSET_MIRROR" not in os.environ:
        handler = functools.partial(_QuietHandler, directory=str(shared))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        os.environ["LLM_ASSET_MIRROR"] = f"http://127.0.0.1:{server.server_address[1]}"
