"""nginx in front of the replicas: `nginx/corral.conf`, `nginx/nginx.conf` and the token map.

`corral.conf` holds only http-level blocks (maps, zones, upstreams, servers), so it drops
into an existing nginx's `conf.d/`. `nginx.conf` is a complete main config that includes
it with every runtime path (pid, logs, temp files) under `var/` of the prefix, so
``nginx -p DIR/nginx -c nginx.conf`` runs it as any user. Bearer tokens never appear in
either: they are in `corral-tokens.conf` (written 0600 from the environment), included
inside the token `map`. The access log names the client, never the token. The client's
token is not sent on: with `proxy.upstream_token_env` nginx sends the replicas' own API key
instead (from the secret `corral-upstream.conf`), otherwise no Authorization header.

How a request is judged, in nginx's order:
1. server rewrite phase: no or unknown token → 401 (JSON body, `WWW-Authenticate`);
2. server rewrite phase, deny by default: the route → scope table of `toolchain/routes.py` (the
   one `stack serve` applies itself) is rendered as a `map` on method and path; a `user` client
   reaches only the routes it gives `user` (or public), everything else needs `admin` (403
   otherwise), unknown paths and routes added to the server later included. This matters
   because nginx sends the replicas its own admin key: what it lets through runs as admin. A
   path with a dot segment or an empty one (`/./`, `/../`, `//`, also percent-encoded) needs
   admin too: nginx judges the normalized path but passes the replica the one the client sent;
3. `limit_req` per client name → 429; `limit_conn` on streaming inference routes → 429;
4. `proxy_pass`: inference and read routes go `least_conn` over the replicas; management
   and registry routes go to `corral_manage`, the same replicas hashed by client name, so a
   blob upload and the `/api/create` that uses it land on the same replica. (A fleet is
   reconciled by `stack apply` over the targets directly; through nginx, a management call
   changes one replica.) Only connect errors and timeouts move to the next replica, so a
   POST that reached a replica is never sent twice.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Mapping, Optional

from toolchain import routes
from toolchain.render.model import ProxyConfig, RenderInput, WebUIConfig, split_hostport

__all__ = [
    "CONF",
    "MAIN_CONF",
    "RUNTIME_DIR",
    "TOKENS_CONF",
    "Site",
    "render",
    "render_tokens",
    "render_upstream_auth",
    "route_scope_map",
    "server_conf",
    "site_for_host",
    "token_line",
    "valid_token",
]

CONF = "nginx/corral.conf"
MAIN_CONF = "nginx/nginx.conf"
TOKENS_CONF = "nginx/corral-tokens.conf"
#: Secret include (server level): the Authorization header nginx sends to the replicas.
UPSTREAM_CONF = "nginx/corral-upstream.conf"
#: Directory under the prefix that nginx itself writes (pid, logs, temp files); never rendered.
RUNTIME_DIR = "nginx/var"

HEADER = "# Rendered by Corral (`stack render`) from the stack file. Do not edit: `stack render --check` reports edits.\n"

#: Management routes with a location of their own (hashed onto one replica by `corral_manage`).
#: Who may call them is not decided here but by the route table (`route_scope_map`).
MANAGE_EXACT = ("/api/create", "/api/copy", "/api/delete", "/api/pull", "/api/push")
#: Routes whose responses stream (NDJSON / SSE): never buffered.
STREAM_EXACT = ("/api/create", "/api/pull", "/api/push", "/api/generate", "/api/chat")
#: Inference streams counted by `limit_conn`.
INFERENCE_EXACT = ("/api/generate", "/api/chat")

_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~+/-]{16,512}=*$")

_ERRORS = {
    401: "unauthorized: a valid bearer token is required",
    403: "forbidden: this route needs an admin token",
    413: "request body too large",
    429: "too many requests: rate limit exceeded, retry later",
    502: "no model server is reachable",
    504: "the model server did not answer in time",
}


#: A request path (`$request_uri`, before any query) with a dot segment or an empty segment,
#: literal or percent-encoded. nginx resolves these in `$uri`, the path the scope map judges,
#: but `proxy_pass` without a URI sends the replica the path as the client wrote it, so
#: `/v2/a/b/blobs/uploads/..` would be judged as `/v2/a/b/blobs/` (a registry read) and routed by
#: the replica as an upload session. Such a path needs admin; no Ollama or OCI client sends one.
UNNORMALIZED_PATH = r"^[^?]*(?:/|%2f)(?:(?:\.|%2e){1,2}(?:/|%2f|\?|$)|/|%2f)"


def _route_regex(methods: str, pattern: str) -> str:
    """One row of the route table as an nginx map regex on `"$request_method $uri"`."""
    if any(c in pattern for c in "\"\n;{}$ ") or "\\" in pattern:
        raise ValueError(f"route pattern {pattern!r} cannot be placed in an nginx map")
    # PCRE's \z, as Python's fullmatch: `$` would also match before a final newline.
    return f"~^(?:{'|'.join(methods.split())}) (?:{pattern})\\z"


def route_scope_map() -> str:
    """The http-level maps that decide which scope a request needs, from `toolchain.routes`.

    `$corral_route_scope`: the route table in its order (nginx tries map regexes in the order
    they appear, and the first match wins, as in the table); unlisted → admin.
    `$corral_need`: that, or admin for a path nginx normalizes (`UNNORMALIZED_PATH`).
    """
    o = ["# The scope each route needs: the route table of toolchain/routes.py, which stack serve\n"
         "# applies itself. First match wins; anything unlisted (an unknown path, a route the server\n"
         "# adds later) needs admin, since the replicas run whatever nginx lets through with its key.\n"]
    o.append('map "$request_method $uri" $corral_route_scope {\n')
    o.append(f"    default {routes.DEFAULT_SCOPE};\n")
    for methods, pattern, scope in routes.ROUTE_TABLE:
        o.append(f'    "{_route_regex(methods, pattern)}" {scope};\n')
    o.append("}\n\n")
    o.append("# nginx judges the normalized path ($uri) but passes the replica the path as sent: one\n"
             "# with a dot or empty segment (also percent-encoded) needs admin.\n")
    o.append("map $request_uri $corral_need {\n")
    o.append("    default $corral_route_scope;\n")
    o.append(f'    "~*{UNNORMALIZED_PATH}" admin;\n')
    o.append("}\n\n")
    o.append("# Deny by default: only these pairs of needed scope and client scope pass.\n")
    o.append('map "$corral_need:$corral_scope" $corral_denied {\n    default 1;\n')
    rank = routes.SCOPE_RANK  # as the server judges a key: its scope ranks at least the need
    for need in rank:
        for have in ("user", "admin"):  # the scopes a proxy client can hold
            if rank[have] >= rank[need]:
                o.append(f'    "{need}:{have}" 0;\n')
    o.append("}\n\n")
    return "".join(o)


@dataclass(frozen=True)
class Site:
    """Where one rendered nginx runs: its upstream addresses and log path."""

    upstreams: tuple[str, ...]
    webui_upstream: Optional[str]
    listen: str
    access_log: str
    tokens_include: str


def valid_token(token: str) -> bool:
    """A bearer token Corral can place in the map: 16+ RFC 6750 characters."""
    return bool(_TOKEN_RE.match(token))


def token_line(token: str, client: str) -> str:
    """One map entry: a case-sensitive regex on the whole header (`map` strings ignore case)."""
    escaped = re.sub(r"([.+])", r"\\\1", token)
    return f'    "~^(?i:bearer) +{escaped}$" {client};\n'


def render_tokens(proxy: ProxyConfig, tokens: Mapping[str, str]) -> dict[str, str]:
    """The secret include: bearer token → client name, for clients whose token Corral holds."""
    lines = [
        "# Rendered by Corral: bearer tokens -> client names. SECRET (mode 0600): never commit or share.\n"
    ]
    for client in proxy.clients:
        if client.name in tokens:
            lines.append(token_line(tokens[client.name], client.name))
    return {TOKENS_CONF: "".join(lines)}


def render_upstream_auth(token: str) -> dict[str, str]:
    """The secret include that replaces the client's token by the replicas' API key."""
    return {
        UPSTREAM_CONF: "# Rendered by Corral: the replicas' API key. SECRET (mode 0600): never commit or share.\n"
        f'proxy_set_header Authorization "Bearer {token}";\n'
    }


def site_for_host(inp: RenderInput) -> Site:
    """The nginx of a host install: replicas as the stack lists them, Open WebUI on its listen address."""
    assert inp.proxy is not None
    ui = inp.webui if inp.webui is not None and inp.webui.enabled else None
    return Site(
        upstreams=tuple(inp.replicas),
        webui_upstream=_connect_address(ui.listen) if ui else None,
        listen=inp.proxy.listen,
        access_log=inp.proxy.access_log,
        tokens_include=inp.proxy.tokens_file or "corral-tokens.conf",
    )


def render(inp: RenderInput) -> dict[str, str]:
    """`nginx/corral.conf` and `nginx/nginx.conf` (no secrets); empty when the stack has no proxy."""
    if inp.proxy is None:
        return {}
    ui = inp.webui if inp.webui is not None and inp.webui.enabled else None
    return {
        CONF: server_conf(inp.proxy, ui, site_for_host(inp)),
        MAIN_CONF: main_conf(),
    }


def main_conf() -> str:
    return (
        HEADER
        + "# Run as any user: nginx -p <this directory> -c nginx.conf  (runtime files go to var/)\n"
        "worker_processes auto;\n"
        "pid var/nginx.pid;\n"
        "error_log var/error.log warn;\n"
        "\n"
        "events {\n"
        "    worker_connections 1024;\n"
        "}\n"
        "\n"
        "http {\n"
        "    client_body_temp_path var/client_body;\n"
        "    proxy_temp_path var/proxy;\n"
        "    fastcgi_temp_path var/fastcgi;\n"
        "    uwsgi_temp_path var/uwsgi;\n"
        "    scgi_temp_path var/scgi;\n"
        "    default_type application/octet-stream;\n"
        "    server_tokens off;\n"
        "    access_log off;\n"
        "    include corral.conf;\n"
        "}\n"
    )


def _connect_address(listen: str) -> str:
    """A listen address as a client connects to it (wildcards become loopback)."""
    host, port = split_hostport(listen)
    if host in ("0.0.0.0", "[::]"):
        host = "127.0.0.1" if host == "0.0.0.0" else "[::1]"
    return f"{host}:{port}"


def _error_locations(hsts: Optional[str]) -> str:
    out = []
    for code, message in _ERRORS.items():
        body = json.dumps({"error": message}) + "\\n"
        out.append(f"    location @corral_{code} {{\n")
        out.append("        default_type application/json;\n")
        if code == 401:
            out.append("        add_header WWW-Authenticate 'Bearer realm=\"corral\"' always;\n")
            if hsts:
                out.append(f"        {hsts}\n")
        out.append(f"        return {code} '{body}';\n")
        out.append("    }\n")
    return "".join(out)


def server_conf(proxy: ProxyConfig, ui: Optional[WebUIConfig], site: Site) -> str:
    t = proxy.timeouts
    rl = proxy.rate_limit
    lim = proxy.body_limits
    tls = proxy.tls
    hsts = (
        f'add_header Strict-Transport-Security "max-age={tls.hsts_max_age}; includeSubDomains" always;'
        if tls and tls.hsts_max_age
        else None
    )
    o: list[str] = [HEADER]
    o.append("# Bearer tokens are only in the included token file (mode 0600).\n\n")
    o.append(
        "log_format corral '$remote_addr client=$corral_client [$time_local] \"$request\" '\n"
        "                  '$status $body_bytes_sent $request_time upstream=$upstream_addr';\n\n"
    )
    o.append("map $http_authorization $corral_client {\n")
    o.append('    default "";\n')
    o.append(f"    include {site.tokens_include};\n")
    o.append("}\n\n")
    o.append("map $corral_client $corral_scope {\n")
    o.append('    default "";\n')
    for client in proxy.clients:
        o.append(f"    {client.name} {client.scope};\n")
    o.append("}\n\n")
    o.append(route_scope_map())
    o.append(f"limit_req_zone $corral_client zone=corral_requests:10m rate={rl.requests_per_second}r/s;\n")
    o.append("limit_conn_zone $corral_client zone=corral_streams:10m;\n\n")
    o.append("upstream corral_servers {\n    least_conn;\n")
    for addr in site.upstreams:
        o.append(f"    server {addr} max_fails={proxy.max_fails} fail_timeout={proxy.fail_timeout}s;\n")
    o.append("    keepalive 32;\n}\n\n")
    o.append("# Management and registry calls of one client stay on one replica (blob, then create).\n")
    o.append("upstream corral_manage {\n    hash $corral_client consistent;\n")
    for addr in site.upstreams:
        o.append(f"    server {addr} max_fails={proxy.max_fails} fail_timeout={proxy.fail_timeout}s;\n")
    o.append("    keepalive 8;\n}\n\n")
    if ui is not None and site.webui_upstream:
        o.append("map $http_upgrade $corral_connection_upgrade {\n    default upgrade;\n    \"\" \"\";\n}\n\n")
        o.append(f"upstream corral_webui {{\n    server {site.webui_upstream};\n    keepalive 8;\n}}\n\n")
    if tls and tls.redirect_listen:
        o.append("server {\n")
        o.append(f"    listen {tls.redirect_listen};\n")
        names = proxy.server_name + (f" {ui.public_host}" if ui is not None else "")
        o.append(f"    server_name {names};\n")
        tls_port = split_hostport(site.listen)[1]
        port_part = "" if tls_port == 443 else f":{tls_port}"
        o.append(f"    return 301 https://$host{port_part}$request_uri;\n}}\n\n")

    listen = f"{site.listen} ssl http2" if tls else site.listen
    tls_lines = ""
    if tls:
        tls_lines = (
            f"    ssl_certificate {tls.cert};\n"
            f"    ssl_certificate_key {tls.key};\n"
            "    ssl_protocols TLSv1.2 TLSv1.3;\n"
            "    ssl_session_cache shared:corral_tls:10m;\n"
        ) + (f"    {hsts}\n" if hsts else "")

    o.append("# The model API: every request needs a known bearer token.\n")
    o.append("server {\n")
    o.append(f"    listen {listen};\n")
    o.append(f"    server_name {proxy.server_name};\n")
    o.append(tls_lines)
    o.append(f"    access_log {site.access_log} corral;\n")
    o.append("    gzip off;\n")
    o.append(f"    client_max_body_size {lim.user};\n")
    o.append(f"    limit_req zone=corral_requests burst={rl.burst} nodelay;\n")
    o.append("    limit_req_status 429;\n")
    o.append("    limit_conn_status 429;\n")
    o.append("    proxy_http_version 1.1;\n")
    o.append('    proxy_set_header Connection "";\n')
    o.append(f"    proxy_set_header Host {proxy.upstream_host};\n")
    if proxy.upstream_token_env is None:
        o.append('    proxy_set_header Authorization "";\n')
    else:  # the replicas require keys: they get theirs, never the client's
        o.append(f"    include {UPSTREAM_CONF.rsplit('/', 1)[1]};\n")
    o.append("    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
    o.append("    proxy_set_header X-Forwarded-Proto $scheme;\n")
    o.append("    proxy_set_header X-Corral-Client $corral_client;\n")
    o.append(f"    proxy_connect_timeout {t.connect}s;\n")
    o.append(f"    proxy_read_timeout {t.read}s;\n")
    o.append(f"    proxy_send_timeout {t.send}s;\n")
    o.append("    # Only failures before the request reached a replica move on; never non_idempotent.\n")
    o.append("    proxy_next_upstream error timeout;\n")
    for code in _ERRORS:
        o.append(f"    error_page {code} = @corral_{code};\n")
    o.append("\n")
    o.append('    if ($corral_client = "") {\n        return 401;\n    }\n')
    o.append("    # Deny by default ($corral_denied above): the locations below only route and tune.\n")
    o.append("    if ($corral_denied) {\n        return 403;\n    }\n\n")

    def location(
        match: str, path: str, *, manage: bool, stream: bool, inference: bool, upload: bool = False
    ) -> None:
        o.append(f"    location {match} {path} {{\n" if match else f"    location {path} {{\n")
        if upload:
            o.append(f"        client_max_body_size {lim.upload};\n")
            o.append("        proxy_request_buffering off;\n")
        if inference:
            o.append(f"        limit_conn corral_streams {rl.streams};\n")
        if stream:
            o.append("        proxy_buffering off;\n")
            o.append("        proxy_cache off;\n")
        o.append(f"        proxy_pass http://{'corral_manage' if manage else 'corral_servers'};\n")
        o.append("    }\n\n")

    for path in MANAGE_EXACT:
        location("=", path, manage=True, stream=path in STREAM_EXACT, inference=False)
    location("^~", "/api/blobs/", manage=True, stream=False, inference=False, upload=True)
    location("^~", "/api/corral/lock", manage=True, stream=False, inference=False)  # stack apply's lock
    for path in INFERENCE_EXACT:
        location("=", path, manage=False, stream=True, inference=True)
    location("^~", "/v1/", manage=False, stream=True, inference=True)
    # Registry: reads and (admins') pushes, on the replica a client's management calls go to.
    o.append("    location ^~ /v2/ {\n")
    o.append(f"        client_max_body_size {lim.upload};\n")
    o.append("        proxy_request_buffering off;\n")
    o.append("        proxy_buffering off;\n")
    o.append("        proxy_pass http://corral_manage;\n")
    o.append("    }\n\n")
    location("", "/", manage=False, stream=False, inference=False)
    o.append(_error_locations(hsts))
    o.append("}\n")

    if ui is not None and site.webui_upstream:
        o.append("\n# Open WebUI: its own host name; it authenticates its users itself.\n")
        o.append("server {\n")
        o.append(f"    listen {listen};\n")
        o.append(f"    server_name {ui.public_host};\n")
        o.append(tls_lines)
        o.append(f"    access_log {site.access_log} corral;\n")
        o.append("    gzip off;\n")
        o.append(f"    client_max_body_size {lim.user};\n")
        o.append("    location / {\n")
        o.append("        proxy_pass http://corral_webui;\n")
        o.append("        proxy_http_version 1.1;\n")
        o.append("        proxy_set_header Upgrade $http_upgrade;\n")
        o.append("        proxy_set_header Connection $corral_connection_upgrade;\n")
        o.append("        proxy_set_header Host $host;\n")
        o.append("        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n")
        o.append("        proxy_set_header X-Forwarded-Proto $scheme;\n")
        o.append("        proxy_buffering off;\n")
        o.append("        proxy_cache off;\n")
        o.append(f"        proxy_read_timeout {t.read}s;\n")
        o.append(f"        proxy_send_timeout {t.send}s;\n")
        o.append("    }\n")
        o.append("}\n")
    return "".join(o)
