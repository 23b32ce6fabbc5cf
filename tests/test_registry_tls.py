"""HTTPS is the default: a pull without `insecure` speaks TLS and verifies the certificate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from server.registry import pull as pull_mod
from tests.support.models import put_model, store_files
from tests.support.registry_server import ThreadServer
from tests.test_registry_protocol import call


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return cert, key


def test_pull_over_https(certificate, tmp_path, monkeypatch):
    monkeypatch.setattr(pull_mod, "_backoff", lambda attempt: 0.0)
    put_model(tmp_path / "b", "registry.ollama.ai/team/bot/v2", b"weights" * 5000)
    with ThreadServer(tmp_path / "b", tls=certificate) as b, ThreadServer(tmp_path / "c") as c:
        name = f"{b.host}/team/bot:v2"
        # A certificate nobody vouches for: refused, nothing stored.
        status, lines = call(c, "/api/pull", {"model": name, "stream": False})
        assert status == 502 and "CERTIFICATE_VERIFY_FAILED" in lines[0]["error"]
        assert not [f for f in store_files(c.models) if f.startswith("manifests/")]
        # Plain HTTP to a TLS port: a clean failure too.
        status, lines = call(c, "/api/pull", {"model": name, "insecure": True, "stream": False})
        assert status == 502 and lines[0]["error"].startswith("pull model manifest: ")

        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # trust it (httpx reads this)
        status, lines = call(c, "/api/pull", {"model": name, "stream": False})
        assert (status, lines) == (200, [{"status": "success"}])
        assert (c.models / "manifests" / b.host / "team/bot/v2").is_file()
