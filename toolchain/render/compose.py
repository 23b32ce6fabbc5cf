"""`compose.yaml`: the stack's servers, nginx and Open WebUI on one host, for `docker compose up`.

Each replica of the stack becomes a `corral-<n>` service with its own store volume;
nginx is the only service that publishes a port, with its own `compose/corral.conf`
(the same renderer as the host config, with the services' names as upstreams and the
access log on stdout). Images are pinned. The token include and the TLS files are
mounted read-only; Open WebUI reads the rendered env files and reaches nginx inside the
compose network (by the API's server name when TLS is on, so the certificate matches).
"""

from __future__ import annotations

import json

from toolchain.render import nginx, webui
from toolchain.render.model import RenderInput, split_hostport

__all__ = ["COMPOSE", "NGINX_CONF", "render"]

COMPOSE = "compose.yaml"
NGINX_CONF = "compose/corral.conf"

_WEBUI_PORT = 8080


def _s(value: str) -> str:
    return json.dumps(value)


def _services(inp: RenderInput) -> list[tuple[str, int]]:
    return [(f"corral-{i}", split_hostport(r)[1]) for i, r in enumerate(inp.replicas, start=1)]


def render(inp: RenderInput) -> dict[str, str]:
    services = _services(inp)
    ui = inp.webui if inp.webui is not None and inp.webui.enabled else None
    proxy = inp.proxy
    out: dict[str, str] = {}
    y = ["# Rendered by Corral (`stack render`) from the stack file. Do not edit.\n", "name: corral\n", "services:\n"]
    for name, port in services:
        index = name.split("-")[1]
        y.append(f"  {name}:\n")
        y.append(f"    image: {_s(inp.corral_image)}\n")
        y.append('    command: ["stack", "serve"]\n')
        y.append("    environment:\n")
        y.append(f"      OLLAMA_HOST: {_s(f'0.0.0.0:{port}')}\n")
        y.append('      OLLAMA_MODELS: "/models"\n')
        # Only nginx publishes a port and it checks the tokens; the replicas listen on the
        # compose network, a non-loopback address, which stack serve refuses without keys.
        y.append('      CORRAL_ALLOW_UNAUTHENTICATED: "1"\n')
        y.append("    volumes:\n")
        y.append(f"      - {_s(f'corral-models-{index}:/models')}\n")
        probe = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}/api/version', timeout=4)"
        y.append("    healthcheck:\n")
        y.append(f"      test: {json.dumps(['CMD', 'python', '-c', probe])}\n")
        y.append("      interval: 30s\n      timeout: 5s\n      retries: 3\n      start_period: 30s\n")
        y.append("    restart: unless-stopped\n")
    if proxy is not None:
        host, port = split_hostport(proxy.listen)
        ports = [(host, port)]
        if proxy.tls is not None and proxy.tls.redirect_listen:
            ports.append(split_hostport(proxy.tls.redirect_listen))
        site = nginx.Site(
            upstreams=tuple(f"{name}:{p}" for name, p in services),
            webui_upstream=f"open-webui:{_WEBUI_PORT}" if ui else None,
            listen=f"0.0.0.0:{port}",
            access_log="/dev/stdout",
            tokens_include=proxy.tokens_file or "corral-tokens.conf",
        )
        conf_proxy = proxy
        if proxy.tls is not None and proxy.tls.redirect_listen:
            _, rport = split_hostport(proxy.tls.redirect_listen)
            conf_proxy = proxy.model_copy(
                update={"tls": proxy.tls.model_copy(update={"redirect_listen": f"0.0.0.0:{rport}"})}
            )
        out[NGINX_CONF] = nginx.server_conf(conf_proxy, ui, site)
        y.append("  nginx:\n")
        y.append(f"    image: {_s(inp.nginx_image)}\n")
        y.append("    ports:\n")
        for h, p in ports:
            bind = "" if h in ("0.0.0.0", "[::]") else f"{h.strip('[]')}:"
            y.append(f"      - {_s(f'{bind}{p}:{p}')}\n")
        y.append("    volumes:\n")
        y.append(f"      - {_s(f'./{NGINX_CONF}:/etc/nginx/conf.d/corral.conf:ro')}\n")
        if proxy.tokens_file is None:
            y.append(f"      - {_s(f'./{nginx.TOKENS_CONF}:/etc/nginx/corral-tokens.conf:ro')}\n")
        elif proxy.tokens_file.startswith("/"):
            y.append(f"      - {_s(f'{proxy.tokens_file}:{proxy.tokens_file}:ro')}\n")
        else:
            y.append(f"      - {_s(f'./nginx/{proxy.tokens_file}:/etc/nginx/{proxy.tokens_file}:ro')}\n")
        if proxy.upstream_token_env is not None:
            y.append(f"      - {_s(f'./{nginx.UPSTREAM_CONF}:/etc/nginx/corral-upstream.conf:ro')}\n")
        if proxy.tls is not None:
            for path in (proxy.tls.cert, proxy.tls.key):
                y.append(f"      - {_s(f'{path}:{path}:ro')}\n")
        y.append("    depends_on:\n")
        for name, _ in services:
            y.append(f"      {name}:\n        condition: service_healthy\n")
        scheme = "https" if proxy.tls is not None else "http"
        probe = (
            f"test \"$$(curl -sk -o /dev/null -w '%{{http_code}}' {scheme}://127.0.0.1:{port}/api/version)\" = 401"
        )
        y.append("    healthcheck:\n")
        y.append(f"      test: {json.dumps(['CMD-SHELL', probe])}\n")
        y.append("      interval: 30s\n      timeout: 5s\n      retries: 3\n")
        if proxy.tls is not None and proxy.server_name != "_":
            y.append("    networks:\n      default:\n        aliases:\n")
            y.append(f"          - {_s(proxy.server_name)}\n")
        y.append("    restart: unless-stopped\n")
    if ui is not None:
        if ui.ollama_url:
            urls = [ui.ollama_url]
        elif proxy is None:
            urls = [f"http://{name}:{p}" for name, p in services]
        elif proxy.tls is not None:
            urls = webui.ollama_urls(inp)
        else:
            urls = [f"http://nginx:{split_hostport(proxy.listen)[1]}"]
        y.append("  open-webui:\n")
        y.append(f"    image: {_s(f'ghcr.io/open-webui/open-webui:{ui.image_tag}')}\n")
        y.append("    env_file:\n")
        y.append(f"      - {_s(f'./{webui.ENV}')}\n")
        y.append(f"      - {_s(f'./{webui.SECRETS_ENV}')}\n")
        y.append("    environment:\n")
        y.append(f"      OLLAMA_BASE_URLS: {_s(';'.join(urls))}\n")
        y.append(f"      PORT: {_s(str(_WEBUI_PORT))}\n")
        y.append("    volumes:\n")
        y.append('      - "open-webui-data:/app/backend/data"\n')
        y.append("    healthcheck:\n")
        y.append(
            f"      test: {json.dumps(['CMD', 'curl', '-fsS', '-o', '/dev/null', f'http://127.0.0.1:{_WEBUI_PORT}/health'])}\n"
        )
        y.append("      interval: 30s\n      timeout: 5s\n      retries: 5\n      start_period: 60s\n")
        if proxy is not None:
            y.append("    depends_on:\n      - nginx\n")
        y.append("    restart: unless-stopped\n")
    y.append("volumes:\n")
    for name, _ in services:
        y.append(f"  corral-models-{name.split('-')[1]}: {{}}\n")
    if ui is not None:
        y.append("  open-webui-data: {}\n")
    out[COMPOSE] = "".join(y)
    return out
