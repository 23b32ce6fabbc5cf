"""`stack serve` as a benchmark target: started here on a loopback port with its own store, the
Gemma model created from the GGUF through the API (as `stack create` does), stopped by PID.

    with StackServe(gguf, num_parallel=4, threads=2, num_ctx=2048) as srv:
        srv.url, srv.model          # "http://127.0.0.1:PORT", "gemma3:270m"

The model gets Ollama's gemma3 TEMPLATE (what `ollama pull gemma3:270m` brings) unless
`template="gguf"`, which leaves the layer out so the GGUF's Jinja chat template is used.
Every request should pass `num_thread` (see `options()`): the benchmark gives every target the
same threads explicitly. `env` adds server settings (e.g. OLLAMA_FLASH_ATTENTION=0).
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
MODEL = "gemma3:270m"

GEMMA3_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StackServe:
    def __init__(self, gguf: str, *, num_parallel: int, threads: int, num_ctx: int, num_batch: int = 512,
                 template: str = "ollama", env: dict[str, str] | None = None, python: str = sys.executable) -> None:
        self.gguf = gguf
        self.num_parallel = num_parallel
        self.threads = threads
        self.num_ctx = num_ctx
        self.num_batch = num_batch
        self.template = template
        self.env = dict(env or {})
        self.python = python
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.model = MODEL
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="corral-bench-serve-"))

    def options(self, **extra) -> dict:
        return {"num_thread": self.threads, "num_ctx": self.num_ctx, "num_batch": self.num_batch, **extra}

    def start(self, timeout: float = 120) -> "StackServe":
        env = {
            **os.environ,
            "OLLAMA_HOST": f"127.0.0.1:{self.port}",
            "OLLAMA_MODELS": str(self.dir / "models"),
            "OLLAMA_NUM_PARALLEL": str(self.num_parallel),
            "OLLAMA_KEEP_ALIVE": "-1",
            "OLLAMA_CONTEXT_LENGTH": str(self.num_ctx),
            "CORRAL_KEYS_FILE": str(self.dir / "no-keys.json"),  # open server, never the user's keys
            **self.env,
        }
        with open(self.dir / "serve.log", "wb") as log:
            self.proc = subprocess.Popen([self.python, "-m", "toolchain.cli", "serve"], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack serve exited: {(self.dir / 'serve.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("stack serve did not answer")
            time.sleep(0.05)
        self._create()
        return self

    def _create(self) -> None:
        data = Path(self.gguf).read_bytes()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with httpx.Client(base_url=self.url, timeout=600) as c:
            c.post(f"/api/blobs/{digest}", content=data).raise_for_status()
            body = {"model": self.model, "files": {Path(self.gguf).name: digest}, "stream": False,
                    "parameters": {"num_ctx": self.num_ctx, "num_thread": self.threads, "num_batch": self.num_batch}}
            if self.template == "ollama":
                body["template"] = GEMMA3_TEMPLATE
                body["parameters"]["stop"] = ["<end_of_turn>"]
            c.post("/api/create", json=body).raise_for_status()
            # load it now (keep_alive -1: stays loaded), so no round pays for the load
            c.post("/api/generate", json={"model": self.model, "keep_alive": -1, "options": self.options()}
                   ).raise_for_status()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def __enter__(self) -> "StackServe":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
