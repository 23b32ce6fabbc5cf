"""The `stack` CLI as a user runs it: a subprocess `python -m toolchain.cli ...`.

    r = run_stack("keys", "list", env={"CORRAL_KEYS_FILE": str(path)})    # CompletedProcess (text)
    with stack_process("apply", "--auto-approve", cwd=repo, env=env) as proc:   # killed on the way out
        seen = read_until(proc, "[local] 1/2 creating")                  # stdout lines so far
        out, err = finish(proc)

The child gets this environment without `CORRAL_TOKEN` (a developer's own token never leaks into
a test), plus `env`, with the repository on `PYTHONPATH` (so it runs from any cwd, installed or
not) and unbuffered output (so a test can read it line by line).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

from tests.support.server import REPO_ROOT


def cli_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if k != "CORRAL_TOKEN"}
    pythonpath = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    return {**base, "PYTHONUNBUFFERED": "1", "PYTHONPATH": pythonpath, **(env or {})}


def run_stack(*args: str, env: Mapping[str, str] | None = None, cwd: str | Path = REPO_ROOT,
              stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "toolchain.cli", *args], cwd=cwd, env=cli_env(env), input=stdin,
                          capture_output=True, text=True, timeout=timeout)


@contextlib.contextmanager
def stack_process(*args: str, cwd: str | Path, env: Mapping[str, str] | None = None,
                  stderr: Any = subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """A running `stack ARGS`, output piped (`stderr`: PIPE, STDOUT to merge, or an open file);
    killed by PID on leaving the block if it is still running (a test that failed half-way)."""
    proc = subprocess.Popen([sys.executable, "-m", "toolchain.cli", *args], cwd=cwd, env=cli_env(env),
                            stdout=subprocess.PIPE, stderr=stderr, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_until(proc: subprocess.Popen, start: str) -> list[str]:
    """stdout lines up to and including the first that starts with `start` (or all, if it ends first)."""
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(start):
            break
    return seen


def finish(proc: subprocess.Popen, timeout: float = 120) -> tuple[str, str]:
    """(stdout, stderr) of `proc` once it ends (TimeoutExpired after `timeout` seconds)."""
    return proc.communicate(timeout=timeout)
