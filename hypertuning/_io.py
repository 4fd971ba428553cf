"""Files: atomic writes, checked reads, the cache directory, and fetching distribution files from PyPI.

Everything that writes goes through a temporary sibling and an `os.replace`, so a crash never leaves half a
file or half a directory for the next reader.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import urllib.request
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from .errors import CheckpointError, HypertuningError

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("HYPERTUNING_CACHE") or Path.home() / ".cache" / "hypertuning"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _read_umask() -> int:
    # os.umask can only be read by setting it; do that once, at import, before any thread could race it
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def _umask() -> int:
    return _UMASK


def atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same directory and rename, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give it normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_dir(final: Path, build, durable: bool = False, replace: bool = False) -> Path:
    """Build a directory in a temp sibling and rename it into place, so a crash never leaves half of one.

    `durable`: also flush its files, itself and its parent to the disk before returning, so that a record
    committed afterwards (the adapter store's index row) never outlives the data after a power loss; a
    process crash alone is covered without it.
    `replace`: an existing `final` is replaced by the new one (moved aside, then deleted, only once the new
    one is complete); without it, an existing `final` is kept (another process built it first)."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        build(tmp)
        os.chmod(tmp, 0o777 & ~_umask())
        if durable:
            for f in sorted(tmp.rglob("*")):
                _fsync(f)  # files and subdirectories (a directory's fsync makes its entries durable)
            _fsync(tmp)
        old = None
        if replace and final.exists():
            old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old."))
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        if durable:
            _fsync(final.parent)  # the rename itself
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def write_json(path: Path, obj) -> None:
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(obj, indent=2) + "\n"))


def read_json_lines(path: Path) -> list[dict]:
    """Records appended one JSON line at a time; a line cut short by a kill (the last) is skipped."""
    if not Path(path).is_file():
        return []
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing ({what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: corrupt {what} ({e})") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing weights file")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: corrupt or truncated safetensors file ({e})") from None


def _index_url() -> str:
    return (
        os.environ.get("HYPERTUNING_PYPI_INDEX")
        or os.environ.get("PIP_INDEX_URL")
        or "https://pypi.org/simple"
    ).rstrip("/")


def fetch_pypi_file(project: str, filename: str) -> Path:
    """Download one distribution file (checked against the index's sha256) into the cache, once.

    Used for sdists, which `pip download` cannot fetch without building their metadata (bigbench's setup
    fails to do so); the PEP 691 JSON simple API gives the URL and hash without running anything.
    """
    target = cache_dir() / "downloads" / filename
    if target.exists():
        return target
    index = f"{_index_url()}/{project}/"
    req = urllib.request.Request(index, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            files = json.load(resp)["files"]
    except (OSError, ValueError, KeyError) as e:
        raise HypertuningError(
            f"Could not read the package index {index} ({e}). Download {filename} by hand and put it at {target}"
        ) from None
    entry = next((f for f in files if f["filename"] == filename), None)
    if entry is None:
        names = [f["filename"] for f in files]
        listed = (
            ", ".join(names[-5:]) + (f" and {len(names) - 5} more" if len(names) > 5 else "") or "nothing"
        )
        raise HypertuningError(
            f"{index} lists no file {filename} (it lists {listed}). Point HYPERTUNING_PYPI_INDEX at an "
            f"index that has it, or download {filename} by hand and put it at {target}"
        )
    want = entry.get("hashes", {}).get("sha256")
    log.info("Downloading %s from %s (once; cached at %s)", filename, index, target)

    def download(tmp: str):
        digest = hashlib.sha256()
        with urllib.request.urlopen(entry["url"], timeout=600) as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                digest.update(chunk)
                dst.write(chunk)
        if want and digest.hexdigest() != want:
            raise HypertuningError(
                f"{filename}: sha256 mismatch (got {digest.hexdigest()}, index says {want})"
            )

    try:
        atomic_write(target, download)
    except OSError as e:  # the index answered, the download did not (a reset, a timeout, a full disk)
        raise HypertuningError(
            f"Downloading {entry['url']} failed ({e}). Run again to retry, or download {filename} by hand "
            f"and put it at {target}"
        ) from None
    return target
