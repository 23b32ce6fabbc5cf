"""A stack project in a folder, for tests that run `stack` commands against a real server.

    write_files(tmp_path, {"stacks/stack.yaml": STACK, "modelfiles/base.Modelfile": BASE_MF})
    enter(tmp_path, monkeypatch, CORRAL_URL=server.url, TINY_GGUF=str(tiny_gguf))
    remove_models(server.url)      # a clean server for every test
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import pytest

from toolchain.client import Client


def write_files(root: Path, files: Mapping[str, str]) -> Path:
    """Write each relative path's text under `root` (folders made as needed); returns `root`."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def enter(root: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    """Run the test from `root` with `env` set and the client-side apply lock file kept in `root`."""
    monkeypatch.chdir(root)
    monkeypatch.setenv("CORRAL_LOCK_DIR", str(root))
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def remove_models(url: str) -> None:
    """Delete every model of the server at `url`."""
    with Client(url) as c:
        for m in c.tags():
            c.delete(m["name"])
