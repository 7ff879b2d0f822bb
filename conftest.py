"""Test-session setup only: smoke mode, idle threads that sleep, and the offline copies (tools/offline.py).

With `../shared/data` beside the repository (CI), tiktoken's BPE files come from a cache filled from it
and every `utils.assets.fetch` tries a server on 127.0.0.1 serving that folder first. Without it (a reader's
laptop) nothing is set up and the same tests use the internet, as the notebooks do.
"""

import os

from tools.offline import use_shared_data

os.environ["LLM_SMOKE"] = "1"
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads starve the
# thread doing the work (bench/speed.py measured cached generation 5-10x slower without this).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
use_shared_data()
