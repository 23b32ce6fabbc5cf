"""The real nginx, started on a rendered prefix for tests, and stopped by its PID.

`free_port()` picks a loopback port; `Nginx(prefix).start()` runs
``nginx -p PREFIX -c nginx.conf -g "daemon off;"`` as a child process (when the tests run
as root, workers run as root too, since the prefix usually sits in a 0700 temp dir; with
`as_user`, root runs it as that user through `setpriv` instead), waits until the port
accepts connections, and `stop()` sends SIGQUIT then SIGKILL to that one PID.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def self_signed(directory: Path, name: str = "llm.localhost") -> tuple[Path, Path]:
    """A fresh self-signed certificate and key for `name` in `directory` (openssl, 2 days)."""
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: Optional[subprocess.Popen] = None, attempts: int = 200) -> None:
    """Bounded wait until 127.0.0.1:port accepts a connection (or the process died)."""
    for _ in range(attempts):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


class Nginx:
    def __init__(self, prefix: Path, port: int, *, conf: str = "nginx.conf", as_user: Optional[str] = None) -> None:
        self.prefix = Path(prefix)
        self.port = port
        self.conf = conf
        self.as_user = as_user
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Nginx":
        assert NGINX is not None, "nginx is not installed"
        assert self.proc is None or self.proc.poll() is not None, "this nginx is already running"
        # Nothing is prepared: the rendered prefix (with its empty var/) is all nginx gets.
        command = [NGINX, "-p", str(self.prefix), "-c", self.conf, "-g", "daemon off;"]
        if self.as_user is not None:
            assert os.geteuid() == 0, "only root can start nginx as another user"
            pw = pwd.getpwnam(self.as_user)
            command = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", *command]
        elif os.geteuid() == 0:
            command[-1] += " user root;"
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(self.port, self.proc)
        except RuntimeError as exc:
            proc = self.proc
            self.stop()
            stderr = proc.stderr.read().decode(errors="replace") if proc.poll() is not None else ""
            raise RuntimeError(f"{exc}: {stderr.strip()}") from None
        return self

    def error_log(self) -> str:
        path = self.prefix / "var" / "error.log"
        return path.read_text() if path.exists() else ""

    def access_log(self) -> str:
        path = self.prefix / "var" / "access.log"
        return path.read_text() if path.exists() else ""

    def wait_access_log(self, pattern: str, count: int = 1, timeout: float = 5.0) -> list[str]:
        """The matches of `pattern` in the access log once there are `count` of them (or when
        `timeout` runs out): nginx writes a request's line after sending its response, so a
        client can read the log before its last request is in it."""
        deadline = time.monotonic() + timeout
        while True:
            found = re.findall(pattern, self.access_log())
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.02)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGQUIT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def __enter__(self) -> "Nginx":
        """Starts nginx unless this object already runs it (then the `with` only stops it)."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
