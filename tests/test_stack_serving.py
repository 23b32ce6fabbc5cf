"""`stack serve -f stack.yaml [--apply]`: runtime settings from the stack, models applied at start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.support.server import REPO_ROOT, free_port
from tests.test_stack_load import write
from toolchain.stack.load import load
from toolchain.stack.serving import runtime_environment


def test_runtime_settings_become_environment_but_the_environment_wins(tmp_path):
    write(tmp_path, {"stack.yaml": "runtime:\n  num_parallel: 4\n  keep_alive: 30m\n  max_queue: 64\n"})
    loaded = load(tmp_path / "stack.yaml", env={})
    assert runtime_environment(loaded, {"OLLAMA_MAX_QUEUE": "8"}) == {"OLLAMA_NUM_PARALLEL": "4", "OLLAMA_KEEP_ALIVE": "30m"}


@pytest.mark.parametrize("value, env", [("false", "0"), ("true", "1")])
def test_flash_attention_becomes_ollamas_one_or_zero(tmp_path, value, env):
    write(tmp_path, {"stack.yaml": f"runtime:\n  flash_attention: {value}\n"})
    loaded = load(tmp_path / "stack.yaml", env={})
    assert runtime_environment(loaded, {}) == {"OLLAMA_FLASH_ATTENTION": env}


def serve(args, cwd, env, log):
    return subprocess.Popen([sys.executable, "-m", "toolchain.cli", "serve", *args], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def test_serve_applies_the_stack_once_it_answers(tmp_path, tiny_gguf):
    write(tmp_path, {
        "stack.yaml": "runtime:\n  num_parallel: 2\nmodels:\n  base:\n    from: ${GGUF}\n    modelfile: base.Modelfile\n"
                      "  bot:\n    modelfile: bot.Modelfile\n",
        "base.Modelfile": 'FROM x\nTEMPLATE "{{ .Prompt }}"\n',
        "bot.Modelfile": "FROM base\nSYSTEM hi\n",
    })
    port = free_port()
    path = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(tmp_path / "models"),
           "GGUF": str(tiny_gguf), "PYTHONPATH": path, "CORRAL_LOCK_DIR": str(tmp_path)}
    with open(tmp_path / "serve.log", "wb") as log:
        proc = serve(["-f", "stack.yaml", "--apply"], tmp_path, env, log)
        try:
            deadline = time.monotonic() + 60
            names: list[str] = []
            while time.monotonic() < deadline and len(names) < 2:
                time.sleep(0.2)
                try:
                    names = sorted(m["name"] for m in httpx.get(f"http://127.0.0.1:{port}/api/tags").json()["models"])
                except httpx.HTTPError:
                    pass
            assert names == ["base:latest", "bot:latest"], (tmp_path / "serve.log").read_text()
            deadline = time.monotonic() + 30
            while "stack applied" not in (tmp_path / "serve.log").read_text() and time.monotonic() < deadline:
                time.sleep(0.1)
            text = (tmp_path / "serve.log").read_text()
            assert "Plan: 2 to create" in text and "stack applied: 2 change(s) made" in text
        finally:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def test_serve_refuses_a_bad_stack_before_starting(tmp_path):
    write(tmp_path, {"stack.yaml": "runtime:\n  num_paralel: 2\n"})
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": str(tmp_path / "models"),
           "PYTHONPATH": str(REPO_ROOT)}
    with open(tmp_path / "serve.log", "wb") as log:
        proc = serve(["-f", "stack.yaml", "--apply"], tmp_path, env, log)
        assert proc.wait(timeout=30) == 1
    assert (tmp_path / "serve.log").read_text() == (
        "Error: stack.yaml:2 runtime.num_paralel: unknown key 'num_paralel'; did you mean 'num_parallel'?\n"
    )
