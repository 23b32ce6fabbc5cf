"""The real Open WebUI (open-webui==0.12.4 from PyPI) for the `webui` tests, from its own venv.

Open WebUI is large (torch and a RAG stack, ~3 GB), so it lives in a separate venv made by
`scripts/install-webui`: `.venv-webui/` beside the repo, or the venv named by
`CORRAL_WEBUI_VENV`. `WEBUI_BIN` is its `open-webui` executable, or None when absent (the
tests are then skipped with the install command as the reason).

`OpenWebUI(env, data_dir, port).start()` runs ``open-webui serve`` on 127.0.0.1:port with
exactly the given environment (the rendered env files, plus DATA_DIR and a private HOME),
waits (bounded) until `/health` answers, and `stop()` ends that one PID.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Mapping, Optional

import httpx

from tests.support.server import REPO_ROOT

PIN = "0.12.4"
INSTALL_HINT = "Open WebUI is not installed: run scripts/install-webui (or set CORRAL_WEBUI_VENV)"


def _webui_bin() -> Optional[Path]:
    venv = Path(os.environ.get("CORRAL_WEBUI_VENV") or REPO_ROOT / ".venv-webui")
    exe = venv / "bin" / "open-webui"
    return exe if exe.is_file() else None


WEBUI_BIN = _webui_bin()


def read_env_file(path: Path) -> dict[str, str]:
    """KEY='value' lines as systemd's EnvironmentFile= and compose's env_file: read them."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not KEY=value: {line!r}"
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        out[key] = value
    return out


class OpenWebUI:
    def __init__(self, env: Mapping[str, str], data_dir: Path, port: int) -> None:
        self.env = dict(env)
        self.data_dir = Path(data_dir)
        self.port = port
        self.proc: Optional[subprocess.Popen] = None
        self.log_path = self.data_dir.parent / f"open-webui-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 240) -> "OpenWebUI":
        assert WEBUI_BIN is not None, INSTALL_HINT
        self.data_dir.mkdir(parents=True, exist_ok=True)
        home = self.data_dir.parent / "home"
        home.mkdir(exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "LANG": "C.UTF-8",
            **self.env,
            "DATA_DIR": str(self.data_dir),
        }
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(WEBUI_BIN), "serve", "--host", "127.0.0.1", "--port", str(self.port)],
                cwd=self.data_dir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"open-webui exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"open-webui did not answer /health within {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)

    def __enter__(self) -> "OpenWebUI":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
