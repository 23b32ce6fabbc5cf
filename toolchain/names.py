"""Model names: Ollama's grammar, defaults, validity and display forms.

A name is ``[scheme://][host/][namespace/]model[:tag][@sha256:<64 hex>]``.

Parsing follows Ollama's ``types/model/name.go`` (read from the right):

* the tag is cut at the last ``:`` only when it comes after the last ``/`` (so a
  ``host:port`` keeps its port);
* then the model is cut at the last ``/``, the namespace at the next one, and the
  rest is the host, with an optional ``scheme://`` in front;
* a separator with nothing on one side yields the placeholder ``!MISSING!``, which
  is never valid.

Corral adds one thing Ollama's current parser dropped: a trailing
``@sha256:<64 hex>`` pins a manifest digest. Only a full 64-hex digest counts; any
other ``@...`` stays part of the name, as in Ollama, and makes it invalid
(``mistral@sha256:abc`` is invalid).

``parse_name`` fills the defaults (host ``registry.ollama.ai``, namespace
``library``, tag ``latest``, scheme ``https``); ``parse_name_bare`` does not.
Neither checks validity: call ``Name.is_valid()`` or use ``parse_valid_name``.
Names compare case-insensitively part by part (``Name.matches``,
``Name.casefold_key``), as Ollama's store does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from toolchain.errors import CorralError

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_NAMESPACE",
    "DEFAULT_SCHEME",
    "DEFAULT_TAG",
    "MISSING",
    "InvalidNameError",
    "Name",
    "is_digest",
    "parse_name",
    "parse_name_bare",
    "parse_valid_name",
]

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"
DEFAULT_SCHEME = "https"

#: Placeholder for a part promised by a separator but empty (``model:``, ``/model``).
MISSING = "!MISSING!"

#: Ollama's message for an unparsable name (create, pull, generate, chat, show, ...).
INVALID_NAME_MESSAGE = "invalid model name"

_DIGEST_RE = re.compile(r"sha256:[0-9a-fA-F]{64}")

# Characters allowed after the first one, per part (the first must be [A-Za-z0-9_]).
_FIRST = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")
_REST = {
    "host": _FIRST | frozenset("-.:"),
    "namespace": _FIRST | frozenset("-"),
    "model": _FIRST | frozenset("-."),
    "tag": _FIRST | frozenset("-."),
}
_MAX_LEN = {"host": 350, "namespace": 80, "model": 80, "tag": 80}


class InvalidNameError(CorralError, ValueError):
    """A model name that does not follow the grammar.

    ``str(err)`` is the message (Ollama's ``invalid model name`` by default);
    ``err.name`` is the offending input.
    """

    def __init__(self, name: str, message: str = INVALID_NAME_MESSAGE) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def is_digest(s: str) -> bool:
    """True for ``sha256:`` followed by exactly 64 hex digits."""
    return _DIGEST_RE.fullmatch(s) is not None


def _valid_part(kind: str, s: str) -> bool:
    if not 1 <= len(s.encode("utf-8")) <= _MAX_LEN[kind]:
        return False
    if s[0] not in _FIRST:
        return False
    allowed = _REST[kind]
    return all(c in allowed for c in s[1:])


def _cut_promised(s: str, sep: str) -> tuple[str, str, bool]:
    """Cut at the last ``sep``; an empty side becomes MISSING."""
    i = s.rfind(sep)
    if i < 0:
        return s, "", False
    before, after = s[:i], s[i + len(sep):]
    return before or MISSING, after or MISSING, True


@dataclass(frozen=True)
class Name:
    """The parts of a model name. Not necessarily valid: see ``is_valid``."""

    scheme: str = ""
    host: str = ""
    namespace: str = ""
    model: str = ""
    tag: str = ""
    digest: str = ""  # "" or "sha256:<64 lower-case hex>"

    def is_valid(self) -> bool:
        """All of host, namespace, model and tag present and well-formed.

        The digest, when present, is always well-formed (the parser only
        recognises full digests).
        """
        return (
            _valid_part("host", self.host)
            and _valid_part("namespace", self.namespace)
            and _valid_part("model", self.model)
            and _valid_part("tag", self.tag)
            and (not self.digest or is_digest(self.digest))
        )

    def __str__(self) -> str:
        """``host/namespace/model:tag[@digest]``; empty parts are left out, no scheme."""
        out = ""
        if self.host:
            out += self.host + "/"
        if self.namespace:
            out += self.namespace + "/"
        out += self.model
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out

    def display_shortest(self) -> str:
        """The short form Ollama shows (``llama3.2:latest``, ``user/m:t``, ``h/n/m:t``).

        The tag is always shown; the digest is not (use ``str`` for a pinned form).
        """
        if self.host.casefold() != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace.casefold() != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        else:
            prefix = ""
        return f"{prefix}{self.model}:{self.tag}"

    def filepath(self) -> str:
        """``host/namespace/model/tag`` (with ``/``): the manifest path under ``manifests/``.

        Raises ``InvalidNameError`` for an invalid name.
        """
        if not self.is_valid():
            raise InvalidNameError(str(self))
        return f"{self.host}/{self.namespace}/{self.model}/{self.tag}"

    def namespace_model(self) -> str:
        """``namespace/model``, the repository part of registry URLs."""
        return f"{self.namespace}/{self.model}"

    def base_url(self) -> str:
        """``scheme://host``, the registry's base URL."""
        return f"{self.scheme or DEFAULT_SCHEME}://{self.host}"

    def casefold_key(self) -> tuple[str, str, str, str]:
        """Key for case-insensitive identity: (host, namespace, model, tag) folded."""
        return (
            self.host.casefold(),
            self.namespace.casefold(),
            self.model.casefold(),
            self.tag.casefold(),
        )

    def matches(self, other: Name) -> bool:
        """Same model, ignoring case (Ollama's ``EqualFold``; scheme and digest ignored)."""
        return self.casefold_key() == other.casefold_key()

    def without_digest(self) -> Name:
        return replace(self, digest="")


def parse_name_bare(s: str) -> Name:
    """Split ``s`` into parts without filling defaults (Ollama's ``ParseNameBare``)."""
    digest = ""
    at = s.rfind("@")
    if at >= 0 and is_digest(s[at + 1:]):
        s, digest = s[:at], s[at + 1:].lower()

    tag = ""
    if s.rfind(":") > s.rfind("/"):
        s, tag, _ = _cut_promised(s, ":")

    s, model, promised = _cut_promised(s, "/")
    if not promised:
        return Name(model=s, tag=tag, digest=digest)

    s, namespace, promised = _cut_promised(s, "/")
    if not promised:
        return Name(namespace=s, model=model, tag=tag, digest=digest)

    scheme, sep, host = s.partition("://")
    if not sep:
        scheme, host = "", s
    return Name(scheme=scheme, host=host, namespace=namespace, model=model, tag=tag, digest=digest)


def parse_name(s: str) -> Name:
    """Parse ``s`` and fill missing host, namespace, tag and scheme with the defaults."""
    n = parse_name_bare(s)
    return replace(
        n,
        scheme=n.scheme or DEFAULT_SCHEME,
        host=n.host or DEFAULT_HOST,
        namespace=n.namespace or DEFAULT_NAMESPACE,
        tag=n.tag or DEFAULT_TAG,
    )


def parse_valid_name(s: str, message: str = INVALID_NAME_MESSAGE) -> Name:
    """``parse_name`` that raises ``InvalidNameError(s, message)`` unless the result is valid.

    ``message`` lets a caller use Ollama's wording for its route, e.g.
    ``name "<x>" is invalid`` (delete) or ``source "<x>" is invalid`` (copy).
    """
    n = parse_name(s)
    if not n.is_valid():
        raise InvalidNameError(s, message)
    return n
