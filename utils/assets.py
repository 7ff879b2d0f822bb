"""Every file the series downloads: one registry, one `fetch(name) -> Path`.

A fetch is cached (a verified file in the data folder is returned without touching the network),
verified by sha256 (or, where no hash is known, by size), written to `<file>.part` and renamed only
once it is complete and correct, so nothing half-written is ever left in the data folder.

Settings (environment variables):
- `LLM_DATA_DIR`: where files land (default: `<repo>/data`).
- `LLM_ASSET_MIRROR`: a base URL tried before the real ones, e.g. `http://127.0.0.1:8000`
  (a folder holding the files under their download names, such as `python -m http.server`).
- `LLM_DOWNLOAD_TIMEOUT`: seconds without data before a connection is given up (default 30).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Asset:
    """One downloadable file: where it lands, where it comes from, how it is checked."""

    filename: str  # name in the data folder
    urls: tuple[str, ...]  # real sources, tried in order (first the book's, then backups)
    sha256: str | None  # of the final file (for a zip: of the extracted member)
    size: int | None  # bytes of the final file, checked when known
    description: str
    download_name: str | None = None  # name of the downloaded file, when not `filename` (the zip)
    extract: str | None = None  # member of the downloaded zip to keep


ASSETS: dict[str, Asset] = {
    "the-verdict": Asset(
        filename="the-verdict.txt",
        urls=(
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch02/01_main-chapter-code/the-verdict.txt",
        ),
        sha256="b41e41a68f0398a3154ae69e2e4c0e2694e17fe0d66730536837f1b01935b31f",
        size=20479,
        description="'The Verdict' by Edith Wharton (1908, public domain), the book's training text",
    ),
    "sms-spam": Asset(
        filename="SMSSpamCollection",
        urls=(
            "https://archive.ics.uci.edu/static/public/228/sms+spam+collection.zip",
            "https://f001.backblazeb2.com/file/LLMs-from-scratch/sms%2Bspam%2Bcollection.zip",
        ),
        # The UCI server may repack its zip, so the extracted file is what is verified.
        sha256="7d039a24a6083ed9ef0f806ebad56bbb976e3aeb8de05669173bfdc4996c239d",
        size=477907,
        description="SMS Spam Collection (UCI, CC BY 4.0), chapter 6",
        download_name="sms+spam+collection.zip",
        extract="SMSSpamCollection",
    ),
    "instruction-data": Asset(
        filename="instruction-data.json",
        urls=(
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/01_main-chapter-code/instruction-data.json",
        ),
        sha256="7e09a9af353722ca15c18bc580f093f9c39d3178335a75177319cb1e1d163944",
        size=203524,
        description="1100 instruction/input/output entries (the book's, Apache-2.0), chapter 7",
    ),
    "gpt2-124M": Asset(
        filename="gpt2-124M.safetensors",
        urls=("https://huggingface.co/openai-community/gpt2/resolve/607a30d783dfa663caf39e06633721c8d4cfcd7e/model.safetensors",),
        sha256="248dfc3911869ec493c76e65bf2fcf7f615828b0254c12b473182f0f81d3a707",
        size=548105171,
        description="OpenAI GPT-2 small (124M) weights, Hugging Face safetensors (MIT)",
    ),
    "gpt2-355M": Asset(
        filename="gpt2-355M.safetensors",
        urls=("https://huggingface.co/openai-community/gpt2-medium/resolve/main/model.safetensors",),
        # No sha256 could be confirmed for this file offline: utils.gpt2 checks every tensor's
        # name and shape after the download instead (and a file under 1 GB is refused there).
        sha256=None,
        size=None,
        description="OpenAI GPT-2 medium (355M) weights, Hugging Face safetensors (MIT)",
    ),
}


class AssetError(RuntimeError):
    """A file could not be fetched or did not verify; the message says how to get it by hand."""


def data_dir() -> Path:
    """The folder downloads land in: `$LLM_DATA_DIR`, else `<repo>/data`."""
    return Path(os.environ.get("LLM_DATA_DIR") or REPO_ROOT / "data")


def _timeout() -> float:
    return float(os.environ.get("LLM_DOWNLOAD_TIMEOUT", "30"))


def sha256_of(path: Path) -> str:
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _verify(asset: Asset, path: Path, source: str) -> None:
    """Raise AssetError if `path` is not the asset's file (sha256, else size; never empty)."""
    size = path.stat().st_size
    if asset.sha256 is not None:
        actual = sha256_of(path)
        if actual != asset.sha256:
            sizes = f"{size} bytes" + (f", expected {asset.size}" if asset.size is not None else "")
            raise AssetError(f"{source}: sha256 mismatch: expected {asset.sha256}, got {actual} ({sizes})")
    elif asset.size is not None and size != asset.size:
        raise AssetError(f"{source}: got {size} bytes, expected {asset.size} (truncated or wrong file)")
    if size == 0:
        raise AssetError(f"{source}: empty file")


def _candidate_urls(asset: Asset) -> list[str]:
    urls = []
    mirror = os.environ.get("LLM_ASSET_MIRROR", "").strip()
    if mirror:
        remote_name = asset.download_name or asset.filename
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(remote_name))
    urls.extend(asset.urls)
    return urls


def _download(url: str, dest: Path, expected_size: int | None, progress: bool) -> None:
    """Stream `url` into `dest`; raise on HTTP errors, stalls and short bodies."""
    request = urllib.request.Request(url, headers={"User-Agent": "llm-from-scratch-notebooks"})
    with urllib.request.urlopen(request, timeout=_timeout()) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_size
        bar = None
        if progress and (total or 0) > 5_000_000:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name.removesuffix(".part"))
        received = 0
        try:
            with open(dest, "wb") as f:
                while True:
                    chunk = response.read(1 << 20)
                    if not chunk:
                        break
                    f.write(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if length and length.isdigit() and received != int(length):
            raise AssetError(f"{url}: connection closed after {received} of {length} bytes")


def _by_hand(asset: Asset, target: Path) -> str:
    url = asset.urls[0]
    if asset.extract:
        return f"download {url}, unzip it and place `{asset.extract}` at {target}"
    return f"download {url} and save it as {target}"


def _reason(exc: BaseException) -> str:
    """One line for one failed URL: 'HTTP Error 404: Not Found', 'timed out', '[Errno 111] Connection refused'."""
    if isinstance(exc, AssetError) or isinstance(exc, urllib.error.HTTPError):
        return str(exc)
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    if isinstance(exc, http.client.IncompleteRead):
        return f"connection closed early ({exc!r})"
    return str(exc) or type(exc).__name__


def fetch(name: str, *, progress: bool = True) -> Path:
    """Return the local path of asset `name`, downloading and verifying it first if needed."""
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    folder = data_dir()
    target = folder / asset.filename
    if target.is_file():
        try:
            _verify(asset, target, str(target))
            return target
        except AssetError as exc:
            raise AssetError(
                f"{target} exists but does not verify ({exc}). Delete it and run again to download a fresh copy."
            ) from None

    folder.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in _candidate_urls(asset):
        # A part file of its own per attempt: two notebooks fetching at once never write into each other's file.
        part = folder / f"{asset.filename}.{uuid.uuid4().hex[:8]}.part"
        try:
            if asset.extract:
                with tempfile.TemporaryDirectory(dir=folder, prefix=asset.filename + ".", suffix=".tmp") as tmp:
                    archive = Path(tmp) / "download.zip"
                    _download(url, archive, None, progress)
                    try:
                        with zipfile.ZipFile(archive) as zf, zf.open(asset.extract) as src, open(part, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as exc:
                        raise AssetError(f"{url}: not a zip holding {asset.extract} ({exc})") from None
            else:
                _download(url, part, asset.size, progress)
            _verify(asset, part, url)
            os.replace(part, target)
            return target
        except (AssetError, OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            errors.append(f"  - {url}: {_reason(exc)}" if not isinstance(exc, AssetError) else f"  - {exc}")
        finally:
            part.unlink(missing_ok=True)
    tried = "\n".join(errors)
    raise AssetError(
        f"could not fetch {asset.filename} ({asset.description}). Tried:\n{tried}\n"
        f"To place it by hand (offline, or behind a proxy): {_by_hand(asset, target)}. "
        "Or set LLM_ASSET_MIRROR to a server that has the file."
    )
