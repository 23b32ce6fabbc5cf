"""`CORRAL_METRICS_ADDR`: `/metrics` on a port of its own, served by the same `stack serve` process.

On a real server with API keys: the metrics port answers without a key and counts the API port's
requests, `/metrics` on the API port is then an unknown path (404, with or without a key), the
metrics port serves nothing else, and SIGTERM stops both ports. Start-up refuses a malformed
address, a port already taken and a non-loopback address (the port has no keys) unless
`CORRAL_ALLOW_UNAUTHENTICATED=1`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from server.config import Config
from server.serve import check_metrics_exposure, metrics_address
from tests.support.server import REPO_ROOT, free_port, start_server
from toolchain import keys as kf
from toolchain.errors import CorralError


def _count(text: str, prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(prefix + " "):
            return float(line.split()[-1])
    return 0.0


def test_metrics_on_their_own_port_without_a_key(tmp_path):
    keys_file = tmp_path / "keys.json"
    user = kf.add(keys_file, "alice", "user")
    mport = free_port()
    env = {"CORRAL_KEYS_FILE": str(keys_file), "CORRAL_METRICS_ADDR": f"127.0.0.1:{mport}"}
    srv = start_server(tmp_path / "models", env=env)
    with srv:
        metrics = f"http://127.0.0.1:{mport}/metrics"
        auth = {"Authorization": f"Bearer {user}"}
        tags = 'corral_http_requests_total{method="GET",route="/api/tags",status="200"}'
        before = _count(httpx.get(metrics).text, tags)
        assert httpx.get(srv.url + "/api/tags", headers=auth).status_code == 200
        for _ in range(200):  # bounded: a request is counted once its last byte is sent
            r = httpx.get(metrics)  # no key
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
            if _count(r.text, tags) == before + 1:
                break
            time.sleep(0.05)
        assert _count(r.text, tags) == before + 1
        assert httpx.head(metrics).status_code == 200

        # the API port no longer serves them, to a key or without one
        for headers in (auth, {}):
            r = httpx.get(srv.url + "/metrics", headers=headers)
            assert (r.status_code, r.text) == ((404, "404 page not found") if headers else (401, '{"error": "unauthorized"}'))
        # the metrics port serves nothing else, whatever the Host
        r = httpx.get(f"http://127.0.0.1:{mport}/api/tags", headers={"Host": "scraper.example"})
        assert (r.status_code, r.text) == (404, "404 page not found")
        r = httpx.post(metrics)
        assert (r.status_code, r.text) == (405, "405 method not allowed")
        assert "Metrics on 127.0.0.1:%d/metrics (no key)" % mport in srv.log()

        os.kill(srv.proc.pid, signal.SIGTERM)  # both ports stop with the process
        assert srv.proc.wait(timeout=30) == -signal.SIGTERM
    for port in (srv.port, mport):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


def _serve(tmp_path, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{free_port()}", "OLLAMA_MODELS": str(tmp_path / "m"),
            "CORRAL_KEYS_FILE": str(tmp_path / "none.json"), **env}
    full.pop("CORRAL_ALLOW_UNAUTHENTICATED", None) if "CORRAL_ALLOW_UNAUTHENTICATED" not in env else None
    return subprocess.run([sys.executable, "-m", "toolchain.cli", "serve"], cwd=REPO_ROOT, env=full,
                          capture_output=True, text=True, timeout=60)


def test_start_up_refusals(tmp_path):
    r = _serve(tmp_path, CORRAL_METRICS_ADDR="9464")
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
        1, "Error: CORRAL_METRICS_ADDR '9464' is not HOST:PORT (e.g. 127.0.0.1:9464, [::1]:9464)")
    r = _serve(tmp_path, CORRAL_METRICS_ADDR=":9464")
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(
        "Error: refusing to serve metrics on 0.0.0.0: the metrics port needs no key and shows model names")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = _serve(tmp_path, CORRAL_METRICS_ADDR=f"127.0.0.1:{port}")
    assert (r.returncode, r.stderr.strip().splitlines()[-1]) == (
        1, f"Error: cannot listen on 127.0.0.1:{port} for metrics (CORRAL_METRICS_ADDR): Address already in use")


@pytest.mark.parametrize("raw, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("localhost:1", ("localhost", 1)),
    ("[::1]:9464", ("::1", 9464)),
    (":9464", ("0.0.0.0", 9464)),
    ("10.0.0.5:65535", ("10.0.0.5", 65535)),
    ("9464", None), ("127.0.0.1", None), ("127.0.0.1:", None), ("127.0.0.1:0", None), ("127.0.0.1:65536", None),
    ("::1:9464", None), ("127.0.0.1:x", None), ("127.0.0.1:-1", None),
])
def test_metrics_address(raw, expected):
    if expected is None:
        with pytest.raises(CorralError, match="is not HOST:PORT"):
            metrics_address(raw)
    else:
        assert metrics_address(raw) == expected


def test_metrics_exposure():
    check_metrics_exposure(Config.from_env({}), "127.0.0.1")
    check_metrics_exposure(Config.from_env({}), "::1")
    check_metrics_exposure(Config.from_env({"CORRAL_ALLOW_UNAUTHENTICATED": "1"}), "10.0.0.5")
    with pytest.raises(CorralError, match="refusing to serve metrics on 10.0.0.5"):
        check_metrics_exposure(Config.from_env({}), "10.0.0.5")
    assert Config.from_env({"CORRAL_METRICS_ADDR": " '127.0.0.1:9464' "}).metrics_addr == "127.0.0.1:9464"
