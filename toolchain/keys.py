"""API keys of a `stack serve`: the keys file shared by `stack keys` (writes) and the server (reads).

    {"version": 1,
     "keys": [{"name": "alice", "scope": "admin", "sha256": "<64 hex>", "created": "2026-11-25T15:00:00Z"}]}

The file holds only the SHA-256 of each token, never a token: a token is printed once by
`stack keys add` and cannot be recovered. Tokens are `corral_` + 43 URL-safe characters
(32 random bytes from `secrets`). The file lives at `CORRAL_KEYS_FILE` (default
`~/.corral/keys.json`), is written with mode 0600 in a 0700 directory, and every write is
atomic (temp file → fsync → rename → fsync of the directory) under an exclusive lock, so two
`stack keys add` never lose each other's key and a reader never sees half a file.

Scopes: `user` (inference and read routes) and `admin` (everything, management included);
which route needs which is decided in one place, `server.auth`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from toolchain.errors import CorralError

TOKEN_PREFIX = "corral_"
TOKEN_BYTES = 32
SCOPES = ("user", "admin")
FORMAT_VERSION = 1
#: Largest keys file read (a file this big is not a keys file: refuse it rather than parse it).
MAX_FILE_BYTES = 4 << 20

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")


class KeysError(CorralError):
    """The keys file is unreadable or malformed, or a keys command cannot do what was asked."""


@dataclass(frozen=True)
class Key:
    name: str
    scope: str
    sha256: str
    created: str

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "scope": self.scope, "sha256": self.sha256, "created": self.created}


def default_path(environ: Mapping[str, str] | None = None) -> Path:
    """`CORRAL_KEYS_FILE`, or `~/.corral/keys.json`."""
    env = os.environ if environ is None else environ
    raw = (env.get("CORRAL_KEYS_FILE") or "").strip().strip("\"'").strip()
    return Path(raw).expanduser() if raw else Path.home() / ".corral" / "keys.json"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def match(keys: Sequence[Key], token: str) -> Key | None:
    """The key whose hash is the token's, compared in constant time against every key."""
    digest = hash_token(token).encode()
    found = None
    for key in keys:
        if hmac.compare_digest(digest, key.sha256.encode()):
            found = key
    return found


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise KeysError(
            f"invalid key name {json.dumps(name)}: use 1-64 letters, digits, '_', '.', '@' or '-', starting with a letter or digit"
        )
    return name


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise KeysError(f"invalid scope {json.dumps(scope)}: use one of {', '.join(SCOPES)}")
    return scope


def parse(raw: bytes, where: str = "keys file") -> list[Key]:
    """Keys from the file's bytes; KeysError naming the problem when malformed."""
    if len(raw) > MAX_FILE_BYTES:
        raise KeysError(f"{where} is larger than {MAX_FILE_BYTES} bytes")
    if not raw.strip():
        return []
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise KeysError(f"{where} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("keys", []), list):
        raise KeysError(f'{where} must be an object with a "keys" list')
    if obj.get("version", FORMAT_VERSION) != FORMAT_VERSION:
        raise KeysError(f"{where} has unsupported version {json.dumps(obj.get('version'))}")
    keys: list[Key] = []
    seen: set[str] = set()
    for i, item in enumerate(obj.get("keys", [])):
        if not isinstance(item, dict):
            raise KeysError(f"{where}: key #{i + 1} is not an object")
        name, scope, digest, created = (item.get(k) for k in ("name", "scope", "sha256", "created"))
        try:
            check_name(name)
            check_scope(scope)
        except KeysError as exc:
            raise KeysError(f"{where}: key #{i + 1}: {exc}") from None
        if not isinstance(digest, str) or not _HEX.fullmatch(digest):
            raise KeysError(f"{where}: key {name!r} has no valid sha256")
        if name in seen:
            raise KeysError(f"{where}: key name {name!r} appears twice")
        seen.add(name)
        keys.append(Key(name, scope, digest, created if isinstance(created, str) else ""))
    return keys


def encode(keys: Sequence[Key]) -> bytes:
    body = {"version": FORMAT_VERSION, "keys": [k.to_json() for k in keys]}
    return (json.dumps(body, indent=2) + "\n").encode()


def load(path: Path) -> list[Key]:
    """The keys in `path`; an absent file has none."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeysError(f"cannot read keys file {path}: {exc.strerror or exc}") from None
    return parse(raw, f"keys file {path}")


def save(path: Path, keys: Sequence[Key]) -> None:
    """Atomically replace `path` with `keys` (mode 0600; the directory is created 0700)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode(keys))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive lock for a read-modify-write of `path` (a sibling `.lock` file, flock)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path.parent / f".{path.name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def add(path: Path, name: str, scope: str, *, now: float | None = None) -> str:
    """Add a key and return its token (the only time it exists outside the caller's memory)."""
    check_name(name)
    check_scope(scope)
    token = new_token()
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if now is None else now))
    with _locked(path):
        keys = load(path)
        if any(k.name == name for k in keys):
            raise KeysError(f"a key named {name!r} already exists (revoke it first)")
        save(path, [*keys, Key(name, scope, hash_token(token), created)])
    return token


def revoke(path: Path, name: str) -> Key:
    """Remove the key called `name`; KeysError if there is none."""
    with _locked(path):
        keys = load(path)
        kept = [k for k in keys if k.name != name]
        if len(kept) == len(keys):
            raise KeysError(f"no key named {name!r} in {path}")
        save(path, kept)
    return next(k for k in keys if k.name == name)
