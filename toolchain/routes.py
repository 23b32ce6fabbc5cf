"""Which API-key scope each route of `stack serve` needs: the one route → scope table.

Two places judge a request by it, and they must agree:

* `server.auth` (the replicas' own API keys) applies it to every request;
* `stack render` (`toolchain/render/nginx.py`) turns it into the nginx `map` that decides what a
  proxy client may call. nginx sends the replicas one admin key of its own, so whatever nginx
  lets through, a replica runs with admin rights: the edge must allow a `user` client exactly
  the routes this table gives `user`, and nothing more.

The server may import the toolchain, never the reverse, so the table lives here.

Rows are (methods, path regex, scope). A request matches a row when its method is one of the
row's and the regex matches its whole path; the first matching row wins; a request no row
matches needs `admin`, so a route added to the server later is closed, at the server and at the
edge, until it is listed here. The regexes are written in the part of the syntax that Python's
`re` and nginx's PCRE read alike (literals, groups, alternation, `.`, `*`, `+`, `?`, `[^/]`).
"""

from __future__ import annotations

import re
from typing import Literal

__all__ = ["DEFAULT_SCOPE", "ROUTES", "ROUTE_TABLE", "SCOPE_RANK", "Scope", "route_scope"]

Scope = Literal["public", "user", "admin"]

#: What a request no row matches needs.
DEFAULT_SCOPE: Scope = "admin"

#: (methods separated by spaces, path regex matched against the whole path, scope); first match wins.
ROUTE_TABLE: tuple[tuple[str, str, Scope], ...] = (
    ("GET HEAD", r"/", "public"),
    # inference
    ("POST", r"/api/(generate|chat|embed|embeddings)", "user"),
    # reads
    ("POST", r"/api/show", "user"),
    ("GET HEAD", r"/api/(tags|ps|version)", "user"),
    ("GET HEAD", r"/metrics", "user"),
    ("GET HEAD", r"/api/corral/store", "user"),  # the store's free space (stack doctor)
    # OpenAI-compatible API: inference and model listing only
    ("GET HEAD POST", r"/v1/.*", "user"),
    # registry reads (pull from this server); every write (push to it) needs admin, upload
    # sessions included (even a GET of one: they belong to a push)
    ("GET HEAD", r"/v2/.+/blobs/uploads(/.*)?", "admin"),
    ("GET HEAD", r"/v2(/.*)?", "user"),
    # management, listed for the reader (the default is admin anyway)
    ("POST HEAD", r"/api/blobs/[^/]*", "admin"),
    ("POST", r"/api/(create|copy|pull|push)", "admin"),
    ("DELETE", r"/api/delete", "admin"),
    ("GET HEAD POST PUT DELETE", r"/api/corral/lock(/[^/]+)?", "admin"),  # stack apply's lock
)

#: The table compiled: (methods, compiled path regex, scope).
ROUTES: tuple[tuple[frozenset[str], re.Pattern[str], Scope], ...] = tuple(
    (frozenset(methods.split()), re.compile(pattern), scope) for methods, pattern, scope in ROUTE_TABLE
)

SCOPE_RANK: dict[str, int] = {"public": 0, "user": 1, "admin": 2}


def route_scope(method: str, path: str) -> Scope:
    """The scope the table gives `method path`: "public", "user" or "admin" (the default)."""
    for methods, pattern, scope in ROUTES:
        if method in methods and pattern.fullmatch(path):
            return scope
    return DEFAULT_SCOPE
