"""A team server with keys as a registry: pushing into it needs an admin key, pulling from it a
user key, and the registry client sends the key only to the host it is configured for. Real
`stack serve` processes on loopback, talking to each other through /v2/."""

from __future__ import annotations

import json

import httpx
import ollama

from tests.support.server import start_server
from toolchain import keys as kf


def auth_env(port: int, token: str) -> dict[str, str]:
    return {"CORRAL_REGISTRY_AUTH": json.dumps({f"127.0.0.1:{port}": {"token": token}})}


def test_push_needs_admin_pull_needs_a_key(tmp_path, tiny_gguf):
    keys_file = tmp_path / "keys.json"
    admin, user = kf.add(keys_file, "ci", "admin"), kf.add(keys_file, "dev", "user")
    with start_server(tmp_path / "team", env={"CORRAL_KEYS_FILE": str(keys_file)}) as team:
        remote = f"127.0.0.1:{team.port}/team/tiny:v1"
        with start_server(tmp_path / "a", env=auth_env(team.port, admin)) as a:
            client = ollama.Client(host=a.url)
            client.create(model=remote, files={"tiny.gguf": client.create_blob(tiny_gguf)})
            r = httpx.post(f"{a.url}/api/push", json={"model": remote, "insecure": True, "stream": False}, timeout=120)
            assert (r.status_code, r.json()) == (200, {"status": "success"})
        listed = httpx.get(f"{team.url}/api/tags", headers={"Authorization": f"Bearer {user}"}).json()["models"]
        assert [m["name"] for m in listed] == ["team/tiny:v1"]

        with start_server(tmp_path / "b", env=auth_env(team.port, user)) as b:
            r = httpx.post(f"{b.url}/api/pull", json={"model": remote, "insecure": True, "stream": False}, timeout=120)
            assert (r.status_code, r.json()) == (200, {"status": "success"})  # a user key reads /v2/
            r = httpx.post(f"{b.url}/api/push", json={"model": remote, "insecure": True, "stream": False}, timeout=120)
            assert (r.status_code, r.json()) == (  # but not write (502: the remote refused, as other remote errors)
                502, {"error": "403: forbidden: this route needs an admin key; key 'dev' has scope user"})

        with start_server(tmp_path / "c") as c:  # no credentials for the team server
            r = httpx.post(f"{c.url}/api/pull", json={"model": remote, "insecure": True, "stream": False}, timeout=120)
            assert (r.status_code, r.json()) == (401, {"error": "pull model manifest: unauthorized: access denied"})
            assert list((c.models / "manifests").rglob("v1")) == []
        log = team.log()
        assert admin not in log and user not in log
        assert '"client": "ci"' in log and '"client": "dev"' in log
