"""The apply lock: `/api/corral/lock` on a real `stack serve`, and `stack apply` taking it.

Concurrent applies run from two working directories with two lock-file folders, so only the
server's lock can stop the second. A `FaultProxy` in front of the server holds the first apply
inside its `/api/create` (so "the first apply is still running" is a fact, not a timing guess),
and stands in for a server without the lock route (it answers 404 there, as a real Ollama does).
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import ContextManager

import httpx
import pytest

from server.routes.lock import LOCK_FILE, ApplyLock, Lease
from tests.support.faultproxy import FaultProxy, Hold, Respond
from tests.support.cli import finish, read_until, stack_process
from tests.support.project import remove_models, write_files
from tests.support.server import ServerProcess, start_server
from toolchain import keys as kf
from toolchain.cli import main
from toolchain.client import Client, base_url
from toolchain.errors import APIError, CorralError
from toolchain.stack.apply import apply_lock
from toolchain.stack.server_lock import LockedError, offers_lock, server_lock

STACK = """\
targets:
  local:
    url: ${CORRAL_URL}
models:
  base:
    from: ${TINY_GGUF}
    modelfile: base.Modelfile
  bot:
    modelfile: bot.Modelfile
"""
FILES = {
    "stack.yaml": STACK,
    "base.Modelfile": 'FROM base\nTEMPLATE """<user>{{ .Prompt }}</user>"""\n',
    "bot.Modelfile": "FROM base\nSYSTEM You are a bot.\n",
}
LOCK = "/api/corral/lock"


@pytest.fixture
def clean(shared_stack_server):
    """An empty, unlocked server for each test."""
    remove_models(shared_stack_server.url)
    with Client(shared_stack_server.url) as c:
        assert c.lock_holder() == {"locked": False}
    return shared_stack_server


def workdir(path: Path, url: str, tiny: Path, owner: str) -> tuple[Path, dict[str, str]]:
    """A stack in its own folder, and the environment of an apply run from it (own lock-file folder)."""
    write_files(path, FILES)
    env = {"CORRAL_URL": url, "TINY_GGUF": str(tiny), "CORRAL_LOCK_DIR": str(path), "CORRAL_LOCK_OWNER": owner}
    return path, env


def applying(cwd: Path, env: dict[str, str], *args: str) -> ContextManager[subprocess.Popen]:
    return stack_process("apply", "--auto-approve", *args, cwd=cwd, env=env)


def in_dir(path: Path, env: dict[str, str], monkeypatch, *args: str) -> int:
    monkeypatch.chdir(path)
    for key in ("CORRAL_URL", "TINY_GGUF", "CORRAL_LOCK_DIR", "CORRAL_LOCK_OWNER"):
        monkeypatch.setenv(key, env[key])
    return main(["apply", "--auto-approve", *args])


def held_create(server: ServerProcess) -> tuple[FaultProxy, threading.Event]:
    """A proxy that holds the body of the first `/api/create` answer until the event is set."""
    proxy = FaultProxy(server.port)
    release = threading.Event()
    proxy.add(lambda s: s.path == "/api/create", Hold(0, release))
    return proxy, release


# -- the lease, as logic (a clock the test moves) over its file --------------------------------------


def test_lease_table(tmp_path):
    now = [1000.0]
    lock = ApplyLock(tmp_path / LOCK_FILE, clock=lambda: now[0])
    lease, held = lock.acquire("alice", 10)
    assert lease is not None and held is None and lease.expires == 1010.0
    assert lock.acquire("bob", 10) == (None, lease)
    now[0] = 1009.0
    renewed = lock.renew(lease.id, None)  # renewal restarts the TTL
    assert renewed == Lease(lease.id, "alice", 1000.0, 1019.0, 10) and lock.holder() == renewed
    assert lock.renew("not-the-id", 5) is None and lock.release("not-the-id") is False
    now[0] = 1019.0  # expired: as if released
    assert lock.holder() is None and lock.renew(lease.id, 10) is None
    bob, _ = lock.acquire("bob", 5)
    assert bob is not None and bob.id != lease.id
    assert lock.release(bob.id) is True and lock.holder() is None


def test_the_lease_is_shared_through_its_file(tmp_path):
    """Two servers on one store (or one server before and after a restart) see one lease."""
    path = tmp_path / LOCK_FILE
    first, second = ApplyLock(path), ApplyLock(path)
    lease, _ = first.acquire("alice", 60)
    assert lease is not None and second.acquire("bob", 60) == (None, lease)
    assert second.renew(lease.id, 120) is not None and first.holder().ttl == 120
    assert oct(path.stat().st_mode & 0o777) == "0o600"  # the file holds the lease id
    assert second.release(lease.id) and first.holder() is None


@pytest.mark.parametrize("content", [
    b"", b"{", b"[]", b'{"id": "x"}', b"null",
    b'{"id": 1, "owner": "a", "since": 0, "expires": 9e18, "ttl": 60}',
    b'{"id": "x", "owner": "a", "since": 0, "expires": true, "ttl": 60}',
    b'{"id": "x", "owner": "a", "since": 0, "expires": 1, "ttl": 60}',  # expired long ago
    b'{"id": "x", "owner": "a", "since": 0, "expires": 9e18, "ttl": 60, "extra": 1}',
    b"[" * 100_000,
])
def test_an_unreadable_or_expired_lock_file_is_no_lock(tmp_path, content):
    path = tmp_path / LOCK_FILE
    path.write_bytes(content)
    lock = ApplyLock(path)
    assert lock.holder() is None
    lease, _ = lock.acquire("alice", 60)
    assert lease is not None and ApplyLock(path).holder() == lease


def test_a_lease_survives_a_server_restart(tmp_path):
    models = tmp_path / "models"
    with start_server(models) as srv:
        lease = httpx.post(srv.url + LOCK, json={"owner": "alice@ci", "ttl": 60}).json()
    with start_server(models) as srv:
        shown = httpx.get(srv.url + LOCK).json()
        assert shown == {"locked": True, "owner": "alice@ci", "since": lease["since"], "expires_at": lease["expires_at"]}
        assert httpx.post(srv.url + LOCK, json={"owner": "bob", "ttl": 60}).status_code == 409
        assert httpx.put(f"{srv.url}{LOCK}/{lease['id']}", json={}).status_code == 200  # the apply goes on
        assert httpx.delete(f"{srv.url}{LOCK}/{lease['id']}").status_code == 200
        assert httpx.get(srv.url + LOCK).json() == {"locked": False}


def test_fallback_decision_on_the_lock_route():
    assert not offers_lock(APIError("404 page not found", 404))  # Ollama: no such route
    assert not offers_lock(APIError("405 method not allowed", 405))
    for status in (409, 401, 403, 500):
        assert offers_lock(APIError("x", status))


# -- the routes -------------------------------------------------------------------------------------


def test_acquire_conflict_renew_release(clean):
    url = clean.url + LOCK
    got = httpx.post(url, json={"owner": "alice@ci", "ttl": 60})
    assert got.status_code == 200
    lease = got.json()
    assert set(lease) == {"id", "owner", "since", "expires_at", "ttl"} and lease["owner"] == "alice@ci"
    other = httpx.post(url, json={"owner": "bob", "ttl": 60})
    assert other.status_code == 409
    assert other.json()["error"] == f"locked by alice@ci since {lease['since']} (expires {lease['expires_at']})"
    shown = httpx.get(url).json()
    assert shown == {"locked": True, "owner": "alice@ci", "since": lease["since"], "expires_at": lease["expires_at"]}
    assert httpx.put(f"{url}/{lease['id']}", json={"ttl": 120}).json()["ttl"] == 120
    assert httpx.put(f"{url}/nope", json={"ttl": 5}).status_code == 404
    assert httpx.delete(f"{url}/nope").json() == {"error": "lock not found: it expired or was released"}
    assert httpx.delete(f"{url}/{lease['id']}").status_code == 200
    assert httpx.delete(f"{url}/{lease['id']}").status_code == 404
    assert httpx.get(url).json() == {"locked": False}


@pytest.mark.parametrize("body, field", [
    ({"ttl": 60}, "owner"),
    ({"owner": "", "ttl": 60}, "owner"),
    ({"owner": 5, "ttl": 60}, "owner"),
    ({"owner": "a\nb", "ttl": 60}, "owner"),
    ({"owner": "x" * 201, "ttl": 60}, "owner"),
    ({"owner": "a"}, "ttl"),
    ({"owner": "a", "ttl": "60"}, "ttl"),
    ({"owner": "a", "ttl": True}, "ttl"),
    ({"owner": "a", "ttl": 0}, "ttl"),
    ({"owner": "a", "ttl": 3601}, "ttl"),
    ([1], "JSON object"),
    ("not json", "invalid JSON in request body"),
])
def test_bad_bodies_name_the_field(clean, body, field):
    kw = {"content": body} if isinstance(body, str) else {"json": body}
    r = httpx.post(clean.url + LOCK, **kw)
    assert r.status_code == 400 and field in r.json()["error"]
    assert httpx.get(clean.url + LOCK).json() == {"locked": False}


def test_bad_renewal_ttl(clean):
    lease = httpx.post(clean.url + LOCK, json={"owner": "a", "ttl": 60}).json()
    try:
        r = httpx.put(f"{clean.url}{LOCK}/{lease['id']}", json={"ttl": -1})
        assert r.status_code == 400 and "ttl" in r.json()["error"]
    finally:
        httpx.delete(f"{clean.url}{LOCK}/{lease['id']}")


def test_a_lease_expires_after_its_ttl(clean):
    first = httpx.post(clean.url + LOCK, json={"owner": "crashed-apply", "ttl": 1}).json()
    # Nobody renews it: within a bounded number of tries a new holder gets the lock.
    for _ in range(100):
        got = httpx.post(clean.url + LOCK, json={"owner": "next", "ttl": 60})
        if got.status_code == 200:
            break
        assert got.status_code == 409 and "crashed-apply" in got.json()["error"]
        threading.Event().wait(0.1)
    assert got.status_code == 200 and got.json()["owner"] == "next"
    assert httpx.put(f"{clean.url}{LOCK}/{first['id']}", json={}).status_code == 404  # the old lease is gone
    httpx.delete(f"{clean.url}{LOCK}/{got.json()['id']}")


def test_lock_routes_need_an_admin_key(tmp_path):
    keys_file = tmp_path / "keys.json"
    admin, user = kf.add(keys_file, "ops", "admin"), kf.add(keys_file, "alice", "user")
    with start_server(tmp_path / "models", env={"CORRAL_KEYS_FILE": str(keys_file)}) as srv:
        url = srv.url + LOCK
        as_user = {"Authorization": f"Bearer {user}"}
        for method in ("GET", "POST"):
            r = httpx.request(method, url, headers=as_user, json={"owner": "a", "ttl": 5})
            assert r.status_code == 403 and "needs an admin key" in r.json()["error"]
        assert httpx.delete(url + "/x", headers=as_user).status_code == 403
        assert httpx.post(url, json={"owner": "a", "ttl": 5}).status_code == 401
        # The CLI with a user key: a clear refusal, not a fallback to the lock file.
        with Client(srv.url, token=user) as c, pytest.raises(CorralError, match="cannot take the apply lock.*admin key"):
            with server_lock(c):
                pass
        with Client(srv.url, token=admin) as c, server_lock(c) as held:
            assert held is not None and c.lock_holder()["locked"] is True


# -- stack apply ------------------------------------------------------------------------------------


def test_second_concurrent_apply_fails_naming_the_holder(clean, tmp_path, tiny_gguf, monkeypatch, capsys):
    proxy, release = held_create(clean)
    with proxy:
        one, env_one = workdir(tmp_path / "one", f"http://{proxy.host}", tiny_gguf, "first-apply@ci")
        two, env_two = workdir(tmp_path / "two", clean.url, tiny_gguf, "second-apply@laptop")
        with applying(one, env_one) as first:
            try:
                seen = read_until(first, "[local] 1/2 creating base:latest")
                assert seen[-1].startswith("[local] 1/2 creating"), seen  # the first apply holds the lock now
                assert in_dir(two, env_two, monkeypatch) == 1
                err = capsys.readouterr().err
                assert f"another stack apply is running against {clean.url}: locked by first-apply@ci since" in err
                assert "wait for it to finish" in err
            finally:
                release.set()
            out, err = finish(first)
    assert first.returncode == 0, (out, err)
    assert "Apply complete: 2 of 2 change(s) made." in out
    with Client(clean.url) as c:
        assert c.lock_holder() == {"locked": False}  # released at the end
    assert in_dir(two, env_two, monkeypatch) == 0  # now there is nothing left to do
    assert "No changes." in capsys.readouterr().out


def test_an_apply_waits_for_the_lock_then_runs(clean, tmp_path, tiny_gguf):
    path, env = workdir(tmp_path / "w", clean.url, tiny_gguf, "waiter")
    with Client(clean.url) as other:  # another machine's apply holds the lock
        lease = other.lock_acquire("ci-runner-7", 60)
        with applying(path, env, "--lock-timeout", "120") as proc:
            try:
                seen = read_until(proc, "waiting for another stack apply against")
                assert "locked by ci-runner-7 since" in seen[-1], seen
            finally:
                other.lock_release(lease["id"])
            out, err = finish(proc)
    assert proc.returncode == 0, (out, err)
    assert "Apply complete: 2 of 2 change(s) made." in out


def test_the_lock_is_released_when_an_apply_fails(clean, tmp_path, tiny_gguf, monkeypatch, capsys):
    path, env = workdir(tmp_path / "f", clean.url, tiny_gguf, "failing")
    (path / "stack.yaml").write_text(STACK + "  zz-broken:\n    from: no-such-model:1b\n")
    assert in_dir(path, env, monkeypatch) == 1
    assert "creating zz-broken:latest failed" in capsys.readouterr().err
    with Client(clean.url) as c:
        assert c.lock_holder() == {"locked": False}


def test_the_lock_is_released_on_ctrl_c(clean, tmp_path, tiny_gguf):
    proxy, release = held_create(clean)
    with proxy:
        path, env = workdir(tmp_path / "c", f"http://{proxy.host}", tiny_gguf, "interrupted")
        with applying(path, env) as proc:
            try:
                seen = read_until(proc, "[local] 1/2 creating")
                with Client(clean.url) as c:
                    assert c.lock_holder()["owner"] == "interrupted", seen
                proc.send_signal(signal.SIGINT)
                out, err = finish(proc)
            finally:
                release.set()
    assert proc.returncode == 130, (out, err)
    with Client(clean.url) as c:
        assert c.lock_holder() == {"locked": False}


def test_a_lost_lease_stops_the_apply_before_its_next_step(clean):
    with Client(clean.url) as c, server_lock(c, ttl=1) as held:
        assert held is not None
        c.lock_release(held.id)  # as if it had expired while the network was down
        for _ in range(100):
            if held.lost:
                break
            threading.Event().wait(0.1)
        with pytest.raises(LockedError, match="expired and was not renewed.*stopped before the next change"):
            held.check()


def test_a_server_without_the_lock_route_falls_back_to_the_lock_file(clean, tmp_path, tiny_gguf, monkeypatch, capsys):
    with FaultProxy(clean.port) as proxy:  # answers like a real Ollama on the lock route
        proxy.add(lambda s: s.path.startswith(LOCK), Respond(404, b"404 page not found"), times=100)
        path, env = workdir(tmp_path / "o", f"http://{proxy.host}", tiny_gguf, "x")
        monkeypatch.setenv("CORRAL_LOCK_DIR", env["CORRAL_LOCK_DIR"])
        with apply_lock(base_url(env["CORRAL_URL"])):  # the file lock is all there is: it refuses
            assert in_dir(path, env, monkeypatch) == 1
        assert "another stack apply is running against" in capsys.readouterr().err
        assert in_dir(path, env, monkeypatch) == 0
        assert "Apply complete: 2 of 2 change(s) made." in capsys.readouterr().out
        assert proxy.requests("POST", LOCK)  # it asked the server first
