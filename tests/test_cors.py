"""CORS following OLLAMA_ORIGINS: origin matching and request decisions as tables."""

from __future__ import annotations

import asyncio
import json

import pytest

from server.cors import (ALLOWED_HEADERS, CORSMiddleware, CorsConfigError, Decision, allowed_origins, decide,
                         default_origins, parse_origins)

DEFAULT = parse_origins(allowed_origins(""))


@pytest.mark.parametrize("origin,allowed", [
    ("http://localhost", True),
    ("https://localhost", True),
    ("http://localhost:3000", True),
    ("https://127.0.0.1:8443", True),
    ("http://0.0.0.0:8080", True),
    ("app://obsidian.md", True),
    ("file://", True),
    ("tauri://localhost", True),
    ("vscode-webview://abc", True),
    ("vscode-file://vscode-app", True),
    ("https://example.com", False),
    ("http://localhost.evil.com", False),
    ("http://127.0.0.2", False),
    ("null", False),
    ("chrome-extension://abcdef", False),
    ("HTTP://LOCALHOST", False),  # origins are compared as sent, like gin-contrib/cors
])
def test_default_origins_are_local_only(origin, allowed):
    assert DEFAULT.allows(origin) is allowed


@pytest.mark.parametrize("env,origin,allowed", [
    ("https://chat.example.com", "https://chat.example.com", True),
    ("https://chat.example.com", "https://other.example.com", False),
    ("https://Chat.Example.com", "https://chat.example.com", True),  # configured origins are lower-cased
    ("https://*.example.com", "https://a.example.com", True),
    ("https://*.example.com", "https://example.org", False),
    ("chrome-extension://*", "chrome-extension://abcdef", True),
    ("moz-extension://abc, https://x.dev", "https://x.dev", True),
    ("*", "https://anything.example", True),
])
def test_ollama_origins_adds_to_the_defaults(env, origin, allowed):
    origins = parse_origins(allowed_origins(env))
    assert origins.allows(origin) is allowed
    assert origins.allows("http://localhost:1234")


@pytest.mark.parametrize("env,text", [
    ("example.com", '"example.com" is not an origin'),
    ("https://*.a.*", 'more than one "*"'),
    ("ftp://files", '"ftp://files" is not an origin'),
])
def test_unusable_origins_refuse_to_start(env, text):
    with pytest.raises(CorsConfigError) as info:
        parse_origins(allowed_origins(env))
    assert text in str(info.value)


def headers(decision):
    out: dict[str, list[str]] = {}
    for k, v in decision.headers:
        out.setdefault(k, []).append(v)
    return out


def test_requests_without_origin_or_from_the_same_origin_pass_untouched():
    assert decide("POST", None, "127.0.0.1:11434", DEFAULT) == decide("POST", "", "h", DEFAULT)
    d = decide("POST", "http://127.0.0.1:11434", "127.0.0.1:11434", DEFAULT)
    assert (d.status, d.headers) == (None, ())
    d = decide("POST", "https://team.example:443", "team.example:443", DEFAULT)
    assert (d.status, d.headers) == (None, ())


def test_a_foreign_origin_is_403_before_any_route():
    message = ('forbidden: origin "https://evil.example" is not allowed (a browser page may call this server '
               "only from an origin listed in OLLAMA_ORIGINS)")
    assert decide("POST", "https://evil.example", "127.0.0.1:11434", DEFAULT) == Decision(403, (), message)
    assert decide("OPTIONS", "https://evil.example", "127.0.0.1:11434", DEFAULT) == Decision(403, (), message)


@pytest.mark.parametrize("path, body", [
    ("/api/tags", {"error": 'forbidden: origin "https://evil.example" is not allowed (a browser page may call this '
                            "server only from an origin listed in OLLAMA_ORIGINS)"}),
    ("/v1/models", {"error": {"message": 'forbidden: origin "https://evil.example" is not allowed (a browser page may '
                                         "call this server only from an origin listed in OLLAMA_ORIGINS)",
                              "type": "permission_error", "param": None, "code": "forbidden"}}),
    ("/v2/", {"errors": [{"code": "DENIED", "message": 'forbidden: origin "https://evil.example" is not allowed (a '
                                                       "browser page may call this server only from an origin listed "
                                                       "in OLLAMA_ORIGINS)", "detail": None}]}),
])
def test_the_middleware_names_a_refused_origin_in_the_paths_error_shape(path, body):
    reached, sent = [], []

    async def app(scope, receive, send):
        reached.append(scope["path"])

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path,
             "headers": [(b"host", b"127.0.0.1:11434"), (b"origin", b"https://evil.example")]}
    asyncio.run(CORSMiddleware(app, DEFAULT)(scope, None, send))
    assert reached == [] and sent[0]["status"] == 403
    assert json.loads(sent[1]["body"]) == body


def test_an_allowed_request_gets_the_origin_echoed():
    d = decide("POST", "http://localhost:5173", "127.0.0.1:11434", DEFAULT)
    assert d.status is None
    assert headers(d) == {"Access-Control-Allow-Origin": ["http://localhost:5173"], "Vary": ["Origin"]}


def test_a_preflight_lists_methods_and_the_openai_sdk_headers():
    d = decide("OPTIONS", "http://localhost:5173", "127.0.0.1:11434", DEFAULT)
    h = headers(d)
    assert d.status == 204
    assert h["Access-Control-Allow-Origin"] == ["http://localhost:5173"]
    assert h["Access-Control-Allow-Methods"] == ["GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS"]
    allowed = h["Access-Control-Allow-Headers"][0].lower().split(",")
    assert allowed == [x.lower() for x in ALLOWED_HEADERS]
    assert "x-stainless-retry-count" in allowed and "authorization" in allowed and "openai-beta" in allowed
    assert h["Access-Control-Max-Age"] == ["43200"]
    assert h["Vary"] == ["Origin", "Access-Control-Request-Method", "Access-Control-Request-Headers"]


def test_star_allows_every_origin_with_a_star_header():
    everyone = parse_origins(allowed_origins("*"))
    d = decide("GET", "https://anything.example", "h", everyone)
    assert headers(d) == {"Access-Control-Allow-Origin": ["*"]}


def test_defaults_match_ollama():
    assert default_origins() == [
        "http://localhost", "https://localhost", "http://localhost:*", "https://localhost:*",
        "http://127.0.0.1", "https://127.0.0.1", "http://127.0.0.1:*", "https://127.0.0.1:*",
        "http://0.0.0.0", "https://0.0.0.0", "http://0.0.0.0:*", "https://0.0.0.0:*",
        "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*"]
