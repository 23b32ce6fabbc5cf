"""The keys file (`toolchain.keys`) and `stack keys`: tokens, hashes, atomic 0600 writes, errors."""

from __future__ import annotations

import json
import stat
import subprocess
import threading

import pytest

from tests.support.cli import run_stack
from toolchain import keys as kf


def test_add_stores_only_the_hash_in_a_private_file(tmp_path):
    path = tmp_path / "d" / "keys.json"
    token = kf.add(path, "alice", "admin", now=0)
    assert token.startswith("corral_") and len(token) == len("corral_") + 43  # 32 random bytes
    raw = path.read_text()
    assert token not in raw and token[len("corral_"):] not in raw
    assert json.loads(raw) == {
        "version": 1,
        "keys": [{"name": "alice", "scope": "admin", "sha256": kf.hash_token(token), "created": "1970-01-01T00:00:00Z"}],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir() if ".tmp-" in p.name] == []


def test_tokens_are_random_and_match_only_their_key(tmp_path):
    path = tmp_path / "keys.json"
    a, b = kf.add(path, "a", "user"), kf.add(path, "b", "admin")
    assert a != b
    keys = kf.load(path)
    assert kf.match(keys, a).name == "a" and kf.match(keys, b).name == "b"
    assert kf.match(keys, a + "x") is None and kf.match(keys, "") is None and kf.match([], a) is None


def test_revoke(tmp_path):
    path = tmp_path / "keys.json"
    token = kf.add(path, "a", "user")
    assert kf.revoke(path, "a").name == "a"
    assert kf.load(path) == [] and kf.match(kf.load(path), token) is None
    with pytest.raises(kf.KeysError, match="no key named 'a'"):
        kf.revoke(path, "a")


@pytest.mark.parametrize(
    "name, scope, message",
    [
        ("a b", "user", 'invalid key name "a b"'),
        ("", "user", 'invalid key name ""'),
        ("../x", "user", 'invalid key name "../x"'),
        ("x" * 65, "user", "invalid key name"),
        ("ok", "root", 'invalid scope "root": use one of user, admin'),
    ],
)
def test_bad_names_and_scopes(tmp_path, name, scope, message):
    with pytest.raises(kf.KeysError, match=message.replace("(", r"\(").replace(".", r"\.")):
        kf.add(tmp_path / "keys.json", name, scope)
    assert not (tmp_path / "keys.json").exists()


def test_duplicate_name_refused(tmp_path):
    path = tmp_path / "keys.json"
    kf.add(path, "a", "user")
    with pytest.raises(kf.KeysError, match="a key named 'a' already exists"):
        kf.add(path, "a", "admin")


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"{", "is not valid JSON"),
        (b"[]", 'must be an object with a "keys" list'),
        (b'{"keys": {}}', 'must be an object with a "keys" list'),
        (b'{"version": 2, "keys": []}', "unsupported version 2"),
        (b'{"keys": [1]}', "key #1 is not an object"),
        (b'{"keys": [{"name": "a", "scope": "god", "sha256": "' + b"0" * 64 + b'"}]}', 'invalid scope "god"'),
        (b'{"keys": [{"name": "a", "scope": "user", "sha256": "zz"}]}', "has no valid sha256"),
        (b'{"keys": [{"name": "a", "scope": "user", "sha256": "' + b"0" * 64 + b'"},'
         b'{"name": "a", "scope": "user", "sha256": "' + b"1" * 64 + b'"}]}', "appears twice"),
        (b" " * (kf.MAX_FILE_BYTES + 1), "larger than"),
    ],
)
def test_malformed_files(raw, message):
    with pytest.raises(kf.KeysError, match=message):
        kf.parse(raw)


def test_empty_or_absent_file_has_no_keys(tmp_path):
    assert kf.load(tmp_path / "absent.json") == []
    (tmp_path / "empty.json").write_bytes(b"")
    assert kf.load(tmp_path / "empty.json") == []


def test_concurrent_adds_lose_nothing(tmp_path):
    path = tmp_path / "keys.json"
    errors = []

    def add(i: int) -> None:
        try:
            kf.add(path, f"k{i}", "user")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(k.name for k in kf.load(path)) == sorted(f"k{i}" for i in range(16))


def test_default_path(tmp_path):
    assert kf.default_path({}) == kf.Path.home() / ".corral" / "keys.json"
    assert kf.default_path({"CORRAL_KEYS_FILE": f" '{tmp_path}/k.json' "}) == tmp_path / "k.json"


def _stack(*args: str, keys_file) -> subprocess.CompletedProcess:
    return run_stack(*args, env={"CORRAL_KEYS_FILE": str(keys_file)}, timeout=60)


def test_cli_add_list_revoke(tmp_path):
    path = tmp_path / "keys.json"
    r = _stack("keys", "add", "alice", "--scope", "admin", keys_file=path)
    assert r.returncode == 0, r.stderr
    token = r.stdout.strip()
    assert token.startswith("corral_") and "\n" not in token
    assert "shown only now" in r.stderr and token not in r.stderr
    assert kf.match(kf.load(path), token).scope == "admin"
    assert _stack("keys", "add", "bob", keys_file=path).returncode == 0  # default scope: user

    r = _stack("keys", "list", keys_file=path)
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split() == ["NAME", "SCOPE", "CREATED"]
    assert [line.split()[:2] for line in lines[1:]] == [["alice", "admin"], ["bob", "user"]]
    assert token not in r.stdout and "sha256" not in r.stdout

    r = _stack("keys", "revoke", "alice", keys_file=path)
    assert r.returncode == 0 and "revoked admin key 'alice'" in r.stderr
    r = _stack("keys", "revoke", "alice", keys_file=path)
    assert (r.returncode, r.stderr.strip()) == (1, f"Error: no key named 'alice' in {path}")
    r = _stack("keys", "add", "x", "--scope", "root", keys_file=path)
    assert (r.returncode, r.stderr.strip()) == (1, 'Error: invalid scope "root": use one of user, admin')


def test_cli_malformed_file_is_one_line(tmp_path):
    path = tmp_path / "keys.json"
    path.write_text("{nope")
    r = _stack("keys", "list", keys_file=path)
    assert r.returncode == 1 and r.stderr.startswith(f"Error: keys file {path} is not valid JSON")
    assert len(r.stderr.strip().splitlines()) == 1
