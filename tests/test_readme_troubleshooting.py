"""The README's clone command and Troubleshooting section stay in step with tools/headers.py and utils/assets.py."""

import re
from pathlib import Path

from tools.headers import REPO_URL
from tools.offline import TIKTOKEN_CACHE_NAMES
from utils.assets import ASSETS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _section(title: str) -> str:
    match = re.search(rf"^## {title}\n(.*?)(?=^## |\Z)", README, flags=re.S | re.M)
    assert match, f"the README has no '## {title}' section"
    return match.group(1)


def test_clone_command_uses_the_repository_address():
    clones = re.findall(r"git clone (\S+) && cd (\S+?)`", README)
    folder = REPO_URL.rstrip("/").rsplit("/", 1)[-1]
    assert clones == [(REPO_URL, folder)], f"README clone command should be `git clone {REPO_URL} && cd {folder}`"


def test_by_hand_table_lists_every_asset_file():
    rows = re.findall(r"^\| `([^`]+)` \|", _section("Troubleshooting"), flags=re.M)
    assert sorted(rows) == sorted(a.filename for a in ASSETS.values()), (
        "the Troubleshooting table of files to place in data/ differs from utils/assets.py ASSETS"
    )


def test_mirror_names_and_addresses_are_the_assets():
    text = _section("Troubleshooting")
    for asset in ASSETS.values():
        assert f"`{asset.download_name or asset.filename}`" in text, f"Troubleshooting does not name {asset.filename}"
    known = {url for asset in ASSETS.values() for url in asset.urls}
    table = "\n".join(re.findall(r"^\| `.*$", text, flags=re.M))
    for url in re.findall(r"\((https://[^)]+)\)", table):
        if not url.endswith("/tree/main"):  # model pages on Hugging Face, where the file is picked by hand
            assert url in known, f"Troubleshooting points at {url}, which is not in utils/assets.py ASSETS"


def test_tiktoken_cache_names_match_the_offline_setup():
    assert len(TIKTOKEN_CACHE_NAMES) == 2
    for name, cached in TIKTOKEN_CACHE_NAMES.items():
        assert re.search(rf"{re.escape(name)}\]\([^)]*\) as\s+`{cached}`", _section("Troubleshooting")), name
