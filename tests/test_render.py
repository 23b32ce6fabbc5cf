"""The pure renderers: RenderInput → {path: text}. Tables of bad input, determinism, content."""

from __future__ import annotations

import copy
import json
import re

import pytest
from pydantic import ValidationError

from tests.support import render_input
from toolchain.render import GITIGNORE, render_public, render_secret, secret_paths
from toolchain.render.model import RenderInput, split_hostport
from toolchain.render.secrets import Secrets


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "webui-secret-key"
    path.write_text("k3y-0123456789abcdef-stable\n")
    return path


SECRETS = Secrets(
    tokens={"alice": "alice-0123456789abcdef", "ops": "ops.0123456789+abcdef/XYZ==", "webui": "webui_0123456789abcdef"},
    admin_password="pw-0123456789",
    webui_secret_key="k3y-0123456789abcdef-stable",
)


@pytest.mark.parametrize(
    "value, expected",
    [
        ("127.0.0.1:11434", ("127.0.0.1", 11434)),
        ("gpu-1.internal:80", ("gpu-1.internal", 80)),
        ("[::1]:8080", ("[::1]", 8080)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_split_hostport_accepts(value, expected):
    assert split_hostport(value) == expected


@pytest.mark.parametrize(
    "value",
    ["localhost", "localhost:", ":80", "host:0", "host:65536", "host:http", "a b:80", "300.1.1.1:80",
     "[::1]80", "[nothex]:80", "http://x:80", "-bad-:80", "x_y:80"],
)
def test_split_hostport_rejects(value):
    with pytest.raises(ValueError, match="not a valid host:port"):
        split_hostport(value)


def _modify(data: dict, path: str, value) -> dict:
    data = copy.deepcopy(data)
    node = data
    keys = path.split(".")
    for key in keys[:-1]:
        node = node[int(key)] if key.isdigit() else node[key]
    last = keys[-1]
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return data


BAD = [
    ("replicas", ["127.0.0.1:11434", "not-a-hostport"], "replica 'not-a-hostport' is not a valid host:port"),
    ("replicas", ["127.0.0.1:99999"], "port must be 1-65535"),
    ("replicas", ["127.0.0.1:1", "127.0.0.1:1"], "listed twice"),
    ("replicas", [], "at least 1"),
    ("proxy.clients.1.name", "alice", "two proxy clients are named 'alice'"),
    ("proxy.clients.1.token_env", "ALICE_TOKEN", "share the token variable ALICE_TOKEN"),
    ("proxy.clients.1.token_env", None, "proxy client 'ops' needs token_env"),
    ("proxy.clients.0.name", "Alice Smith", "client name 'Alice Smith' must match"),
    ("proxy.clients.0.scope", "root", "Input should be 'user' or 'admin'"),
    ("proxy.clients.0.token_env", "ALICE-TOKEN", "not an environment variable name"),
    ("proxy.clients", [], "at least 1"),
    ("proxy.listen", "127.0.0.1", "not a valid host:port"),
    ("proxy.tls", {"cert": "relative.pem", "key": "/k.pem"}, "must be absolute"),
    ("proxy.body_limits", {"user": "ten megs"}, "must be a number"),
    ("proxy.rate_limit", {"requests_per_second": 0}, "greater than or equal to 1"),
    ("proxy.server_name", "bad name;", "is not a host name"),
    ("proxy.unknown", 1, "Extra inputs are not permitted"),
    ("proxy.upstream_token_env", "OPS_TOKEN", "upstream_token_env OPS_TOKEN is also a client's token_env"),
    ("proxy.upstream_token_env", "replica key", "upstream_token_env 'replica key' is not an environment variable name"),
    ("webui.presets.0.model", "llama3:8b", "preset 'helpdesk' is for model 'llama3:8b', which the stack does not declare"),
    ("webui.presets.0.id", "two words", "must be one word"),
    ("webui.default_models", ["nope"], "default model 'nope' is neither"),
    ("webui.hidden_models", ["nope"], "hidden model 'nope' is not declared"),
    ("webui.client", "mallory", "webui.client 'mallory' is not a proxy client"),
    ("webui.client", None, "webui.client must name the proxy client"),
    ("webui.image_tag", "main", "must be a pinned tag"),
    ("webui.public_url", "chat.example.org", "is not an http(s) URL"),
    ("webui.admin_email", "admin", "not an email address"),
    ("webui.secret_key_file", "key.txt", "must be absolute"),
]


@pytest.mark.parametrize("path, value, message", BAD, ids=[f"{p}={v!r}" for p, v, _ in BAD])
def test_bad_input_is_rejected_with_a_message_naming_it(key_file, path, value, message):
    data = _modify(render_input.stack_data(key_file), path, value)
    with pytest.raises(ValidationError) as err:
        RenderInput.model_validate(data)
    assert message in str(err.value)


def test_duplicate_preset_ids_are_rejected(key_file):
    data = render_input.stack_data(key_file)
    data["webui"]["presets"].append(dict(data["webui"]["presets"][0]))
    with pytest.raises(ValidationError, match="two presets have the id 'helpdesk'"):
        RenderInput.model_validate(data)


def test_tls_with_catch_all_server_name_needs_an_explicit_webui_url(key_file):
    data = render_input.stack_data(key_file)
    data["proxy"]["tls"] = {"cert": "/etc/tls/c.pem", "key": "/etc/tls/k.pem"}
    with pytest.raises(ValidationError, match="set webui.ollama_url"):
        RenderInput.model_validate(data)


def test_preset_model_names_match_like_ollama_names(key_file):
    """`gemma3:270m` declared; a preset on `GEMMA3:270m` or `library/gemma3:270m` is the same model."""
    data = render_input.stack_data(key_file)
    data["webui"]["presets"][0]["model"] = "registry.ollama.ai/library/Gemma3:270m"
    RenderInput.model_validate(data)


def test_same_input_renders_byte_identical_files(key_file):
    first = render_public(render_input.make(key_file))
    second = render_public(render_input.make(key_file))
    assert first == second
    assert render_secret(render_input.make(key_file), SECRETS) == render_secret(render_input.make(key_file), SECRETS)


def test_file_set_with_everything_on(key_file):
    files = render_public(render_input.make(key_file))
    assert sorted(files) == [
        GITIGNORE,
        "compose.yaml",
        "compose/corral.conf",
        "nginx/corral.conf",
        "nginx/nginx.conf",
        "open-webui/models.json",
        "open-webui/open-webui.env",
        "systemd/corral.service",
        "systemd/open-webui.service",
    ]
    assert sorted(render_secret(render_input.make(key_file), SECRETS)) == secret_paths(render_input.make(key_file))
    assert files[GITIGNORE].splitlines()[1:] == ["/nginx/corral-tokens.conf", "/open-webui/secrets.env", "/nginx/var/"]


def test_without_proxy_and_ui_only_the_server_units_render(key_file):
    inp = render_input.make(key_file, proxy=None, webui=None)
    assert sorted(render_public(inp)) == ["compose.yaml", "systemd/corral.service"]
    assert render_secret(inp, Secrets()) == {}


def test_webui_switched_off_renders_no_ui_and_needs_none_of_its_secrets(key_file):
    """`webui.enabled: false` keeps the section in the stack but takes Open WebUI out of every file."""
    from toolchain.render.secrets import collect

    data = render_input.stack_data(key_file)
    data["webui"]["enabled"] = False
    inp = RenderInput.model_validate(data)
    public = render_public(inp)
    assert sorted(public) == [
        GITIGNORE, "compose.yaml", "compose/corral.conf", "nginx/corral.conf", "nginx/nginx.conf", "systemd/corral.service",
    ]
    assert secret_paths(inp) == ["nginx/corral-tokens.conf"]
    for rel in ("nginx/corral.conf", "compose/corral.conf"):
        assert "corral_webui" not in public[rel] and "chat.example.org" not in public[rel]
    assert "open-webui" not in public["compose.yaml"]
    key_file.unlink()  # neither the secret key file nor the admin password is read
    env = render_input.environment()
    env.pop("WEBUI_ADMIN_PASSWORD")
    secrets = collect(inp, env)
    assert secrets.admin_password is None and secrets.webui_secret_key is None
    assert sorted(render_secret(inp, secrets)) == ["nginx/corral-tokens.conf"]


def test_tls_redirects_plain_http_offers_tls_1_2_and_1_3_only_and_sends_hsts(key_file):
    data = render_input.stack_data(key_file)
    data["proxy"].update(listen="443", server_name="llm.example.org",
                         tls={"cert": "/etc/tls/llm.crt", "key": "/etc/tls/llm.key", "redirect_listen": "80"})
    conf = render_public(RenderInput.model_validate(data))["nginx/corral.conf"]
    redirect = conf[conf.index("server {\n    listen 0.0.0.0:80;\n"):]
    redirect = redirect[: redirect.index("}\n")]
    assert "    server_name llm.example.org chat.example.org;\n" in redirect
    assert "    return 301 https://$host$request_uri;\n" in redirect
    hsts = '    add_header Strict-Transport-Security "max-age=31536000; includeSubDomains" always;\n'
    for host in ("llm.example.org", "chat.example.org"):  # the API and the UI
        server = conf[conf.index(f"    server_name {host};\n") :]
        server = server[: server.index("    location")]
        assert "    ssl_protocols TLSv1.2 TLSv1.3;\n" in server and hsts in server, host
    assert conf.count("ssl_protocols") == 2 and "listen 0.0.0.0:443 ssl http2;" in conf


def test_a_hidden_preset_is_hidden_in_models_json(key_file):
    data = render_input.stack_data(key_file)
    data["webui"]["presets"][0]["hidden"] = True
    body = json.loads(render_public(RenderInput.model_validate(data))["open-webui/models.json"])
    assert body["models"][0]["id"] == "helpdesk" and body["models"][0]["meta"]["hidden"] is True


def test_no_secret_reaches_a_public_file(key_file):
    inp = render_input.make(key_file)
    public = "".join(render_public(inp).values())
    secret = render_secret(inp, SECRETS)
    for value in [*SECRETS.tokens.values(), SECRETS.admin_password, SECRETS.webui_secret_key]:
        assert value not in public
        escaped = value.replace(".", "\\.").replace("+", "\\+")
        assert any(value in text or escaped in text for text in secret.values())


def test_nginx_upstream_lists_exactly_the_replicas(key_file):
    inp = render_input.make(key_file, replicas=["10.0.0.11:11434", "gpu-2.internal:11434", "[fd00::3]:11434"])
    conf = render_public(inp)["nginx/corral.conf"]
    block = conf[conf.index("upstream corral_servers {"):]
    block = block[: block.index("}")]
    servers = [line.split()[1] for line in block.splitlines() if line.strip().startswith("server ")]
    assert servers == ["10.0.0.11:11434", "gpu-2.internal:11434", "[fd00::3]:11434"]
    assert "least_conn;" in block and "max_fails=2" in block
    manage = conf[conf.index("upstream corral_manage {"):]
    manage = manage[: manage.index("}")]
    assert [line.split()[1] for line in manage.splitlines() if line.strip().startswith("server ")] == servers
    assert "hash $corral_client consistent;" in manage
    assert conf.count("proxy_next_upstream") == 1 and "    proxy_next_upstream error timeout;\n" in conf


def test_token_map_is_case_sensitive_on_the_token(key_file):
    """nginx compares plain `map` strings case-insensitively; a token is matched by an anchored regex."""
    text = render_secret(render_input.make(key_file), SECRETS)["nginx/corral-tokens.conf"]
    assert '"~^(?i:bearer) +ops\\.0123456789\\+abcdef/XYZ==$" ops;' in text
    assert '"~^(?i:bearer) +alice-0123456789abcdef$" alice;' in text


def test_webui_env_sets_what_a_team_server_needs(key_file):
    env = render_public(render_input.make(key_file))["open-webui/open-webui.env"]
    values = dict(line.split("=", 1) for line in env.splitlines() if line and not line.startswith("#"))
    assert values == {
        "ENABLE_PERSISTENT_CONFIG": "'false'",
        "OFFLINE_MODE": "'true'",
        "ENABLE_OLLAMA_API": "'true'",
        "OLLAMA_BASE_URL": "'http://127.0.0.1:8080'",
        "ENABLE_OPENAI_API": "'false'",
        "WEBUI_URL": "'https://chat.example.org'",
        "CORS_ALLOW_ORIGIN": "'https://chat.example.org'",
        "ENABLE_SIGNUP": "'false'",
        "WEBUI_ADMIN_EMAIL": "'admin@example.org'",
        "WEBUI_ADMIN_NAME": "'Admin'",
        "DEFAULT_MODELS": "'helpdesk'",
        "MODEL_ORDER_LIST": "'[\"helpdesk\", \"gemma3:270m\", \"tiny:latest\", \"support-bot:latest\"]'",
    }
    secrets = render_secret(render_input.make(key_file), SECRETS)["open-webui/secrets.env"]
    assert "WEBUI_ADMIN_PASSWORD='pw-0123456789'\n" in secrets
    assert "WEBUI_SECRET_KEY='k3y-0123456789abcdef-stable'\n" in secrets
    assert "OLLAMA_API_CONFIGS='{\"0\":{\"enable\":true,\"key\":\"webui_0123456789abcdef\"}}'\n" in secrets


def test_webui_without_proxy_balances_over_every_replica(key_file):
    inp = render_input.make(key_file, proxy=None)
    data = render_input.stack_data(key_file, proxy=None)
    data["webui"]["client"] = None
    inp = RenderInput.model_validate(data)
    env = render_public(inp)["open-webui/open-webui.env"]
    assert "OLLAMA_BASE_URLS='http://127.0.0.1:11434;http://127.0.0.1:11435'\n" in env
    assert "OLLAMA_API_CONFIGS" not in render_secret(inp, SECRETS)["open-webui/secrets.env"]


def test_models_json_is_the_sync_body(key_file):
    body = json.loads(render_public(render_input.make(key_file))["open-webui/models.json"])
    # Open WebUI knows a server's models by the names /api/tags shows (tag included).
    assert [m["id"] for m in body["models"]] == ["helpdesk", "tiny:latest"]
    preset, hidden = body["models"]
    required = {"id", "user_id", "name", "params", "meta", "is_active", "created_at", "updated_at"}
    assert required <= set(preset) and required <= set(hidden)
    assert preset["base_model_id"] == "support-bot:latest"
    assert preset["params"] == {"system": "You answer the team's IT questions.", "temperature": 0.2, "num_ctx": 4096}
    assert preset["meta"] == {"description": "Answers IT questions", "tags": [{"name": "team"}]}
    assert preset["access_grants"][0]["principal_id"] == "*"
    assert hidden["base_model_id"] is None and hidden["meta"] == {"hidden": True}


def test_compose_publishes_only_nginx_and_pins_images(key_file):
    from ruamel.yaml import YAML

    compose = YAML(typ="safe").load(render_public(render_input.make(key_file))["compose.yaml"])
    services = compose["services"]
    assert set(services) == {"corral-1", "corral-2", "nginx", "open-webui"}
    assert [n for n, s in services.items() if "ports" in s] == ["nginx"]
    assert services["nginx"]["ports"] == ["127.0.0.1:8080:8080"]
    assert services["open-webui"]["image"] == "ghcr.io/open-webui/open-webui:v0.12.4"
    assert services["nginx"]["image"] == "nginx:1.22.1"
    assert all("healthcheck" in s and ":" in s["image"] for s in services.values())
    assert services["corral-2"]["environment"]["OLLAMA_HOST"] == "0.0.0.0:11435"
    assert set(compose["volumes"]) == {"corral-models-1", "corral-models-2", "open-webui-data"}
    conf = render_public(render_input.make(key_file))["compose/corral.conf"]
    assert "server corral-1:11434 " in conf and "server corral-2:11435 " in conf
    assert "server open-webui:8080;" in conf


def test_systemd_units_are_hardened(key_file):
    units = render_public(render_input.make(key_file))
    for name in ("systemd/corral.service", "systemd/open-webui.service"):
        text = units[name]
        for line in ("ProtectSystem=strict", "Restart=on-failure", "NoNewPrivileges=yes", "ProtectHome=yes"):
            assert line + "\n" in text, (name, line)
    assert "ReadWritePaths=/var/lib/corral/models\n" in units["systemd/corral.service"]
    assert "User=corral\n" in units["systemd/corral.service"]
    assert "ExecStart=/usr/local/bin/open-webui serve --host 127.0.0.1 --port 3000\n" in units["systemd/open-webui.service"]
    # systemd creates the store (owned by User=) before it mounts ReadWritePaths=, which must exist.
    assert "StateDirectory=corral/models\n" in units["systemd/corral.service"]
    assert "Environment=CORRAL_KEYS_FILE=/etc/corral/keys.json\n" in units["systemd/corral.service"]
    assert "Environment=STATIC_DIR=/var/lib/open-webui/static\n" in units["systemd/open-webui.service"]


def test_a_store_outside_var_lib_is_only_a_read_write_path(key_file):
    unit = render_public(render_input.make(key_file, store="/srv/models"))["systemd/corral.service"]
    assert "ReadWritePaths=/srv/models\n" in unit and "StateDirectory" not in unit


def _location(conf: str, header: str) -> str:
    start = conf.index(f"    location {header} {{\n")
    return conf[start : conf.index("\n    }\n", start)]


@pytest.mark.parametrize(
    "header, stream, manage, upload",
    [
        ("= /api/generate", True, False, False),
        ("= /api/chat", True, False, False),
        ("^~ /v1/", True, False, False),
        ("= /api/create", True, True, False),
        ("= /api/pull", True, True, False),
        ("= /api/push", True, True, False),
        ("= /api/copy", False, True, False),
        ("= /api/delete", False, True, False),
        ("^~ /api/blobs/", False, True, True),
        ("^~ /v2/", True, True, True),
        ("/", False, False, False),
    ],
)
def test_each_route_gets_its_buffering_upstream_and_body_limit(key_file, header, stream, manage, upload):
    conf = render_public(render_input.make(key_file))["nginx/corral.conf"]
    block = _location(conf, header)
    assert ("proxy_buffering off;" in block) is stream
    assert ("proxy_pass http://corral_manage;" in block) is manage
    assert ("proxy_pass http://corral_servers;" in block) is not manage
    assert ("client_max_body_size 0;" in block) is upload
    assert " if " not in block  # who may call a route is decided once, at server level
    server = conf[conf.index("# The model API") : conf.index("    location ")]
    for line in ("gzip off;", "proxy_http_version 1.1;", 'proxy_set_header Connection "";',
                 "proxy_read_timeout 600s;", "proxy_send_timeout 600s;", "client_max_body_size 10m;"):
        assert f"    {line}\n" in server


def test_with_an_upstream_key_nginx_sends_the_replicas_key_not_the_clients(key_file):
    data = render_input.stack_data(key_file)
    plain = render_public(RenderInput.model_validate(data))
    assert '    proxy_set_header Authorization "";\n' in plain["nginx/corral.conf"]
    data["proxy"]["upstream_token_env"] = "REPLICA_KEY"
    inp = RenderInput.model_validate(data)
    public = render_public(inp)
    for rel in ("nginx/corral.conf", "compose/corral.conf"):
        assert "    include corral-upstream.conf;\n" in public[rel]
        assert "proxy_set_header Authorization" not in public[rel].split("# Open WebUI")[0]
    assert "nginx/corral-upstream.conf" in secret_paths(inp)
    assert "/nginx/corral-upstream.conf\n" in public[GITIGNORE]
    assert '"./nginx/corral-upstream.conf:/etc/nginx/corral-upstream.conf:ro"' in public["compose.yaml"]
    key = "replica-0123456789abcdef"
    secret = render_secret(inp, Secrets(**{**SECRETS.__dict__, "upstream_token": key}))
    assert secret["nginx/corral-upstream.conf"].endswith(f'proxy_set_header Authorization "Bearer {key}";\n')
    assert not any(key in text for text in public.values())


def _map(conf: str, header: str) -> list[tuple[str, str]]:
    """The (key, value) lines of one rendered `map`, in their order."""
    start = conf.index(f"map {header} {{\n") + len(f"map {header} {{\n")
    body = conf[start : conf.index("}\n", start)]
    out = []
    for line in body.splitlines():
        key, _, value = line.strip().rstrip(";").rpartition(" ")
        out.append((key.strip('"'), value))
    return out


def _nginx_scope(entries: list[tuple[str, str]], method: str, path: str) -> str:
    """What nginx's `$corral_route_scope` map gives `method path` (its regexes tried in order,
    as nginx does; PCRE's \\z is Python's \\Z)."""
    default = dict(entries)["default"]
    for key, value in entries:
        if key.startswith("~") and re.match(key[1:].replace(r"\z", r"\Z"), f"{method} {path}"):
            return value
    return default


#: Requests whose scope the edge and the server must judge alike: every route of the table, near
#: misses, and paths no route has.
SCOPE_PROBES = [
    ("GET", "/"), ("HEAD", "/"), ("POST", "/"), ("GET", "/api/tags"), ("HEAD", "/api/tags"), ("GET", "/api/ps"),
    ("GET", "/api/version"), ("GET", "/metrics"), ("GET", "/api/corral/store"), ("DELETE", "/api/corral/store"),
    ("POST", "/api/generate"), ("POST", "/api/chat"), ("POST", "/api/embed"), ("POST", "/api/embeddings"),
    ("POST", "/api/show"), ("GET", "/api/show"), ("POST", "/v1/chat/completions"), ("GET", "/v1/models"),
    ("GET", "/v1/models/llama3:8b"), ("DELETE", "/v1/models/x"), ("GET", "/v2/"), ("GET", "/v2"),
    ("GET", "/v2/library/x/manifests/latest"), ("HEAD", "/v2/library/x/blobs/sha256:" + "0" * 64),
    ("PUT", "/v2/library/x/manifests/latest"), ("POST", "/v2/library/x/blobs/uploads/"),
    ("GET", "/v2/library/x/blobs/uploads/abc"), ("HEAD", "/v2/library/x/blobs/uploads/abc"),
    ("PATCH", "/v2/library/x/blobs/uploads/abc"), ("DELETE", "/v2/library/x/blobs/uploads/abc"),
    ("GET", "/v2/team/x/blobs/uploads"), ("POST", "/api/create"), ("POST", "/api/blobs/sha256:" + "0" * 64),
    ("HEAD", "/api/blobs/sha256:" + "0" * 64), ("POST", "/api/copy"), ("DELETE", "/api/delete"), ("POST", "/api/pull"),
    ("POST", "/api/push"), ("GET", "/api/corral/lock"), ("DELETE", "/api/corral/lock/abc"), ("POST", "/api/lock"),
    ("GET", "/api/tagsx"), ("POST", "/api/generate/"), ("GET", "/debug/pprof"), ("GET", "/api/nope"),
    ("OPTIONS", "/api/tags"), ("GET", "/api/tags\n"), ("get", "/api/tags"), ("GET", "/metrics/x"),
]


@pytest.mark.parametrize("method, path", SCOPE_PROBES)
def test_nginx_judges_each_route_by_the_servers_own_route_table(key_file, method, path):
    """The `$corral_route_scope` map is toolchain/routes.py's table (the one `stack serve`'s
    auth applies), row by row in its order, defaulting to admin; an OPTIONS, public at the
    server for CORS preflights (which never carry a token), is no route a user client needs."""
    from toolchain.routes import route_scope

    conf = render_public(render_input.make(key_file))["nginx/corral.conf"]
    assert _nginx_scope(_map(conf, '"$request_method $uri" $corral_route_scope'), method, path) == route_scope(method, path)


def test_nginx_scope_map_lists_the_route_table_in_order_and_denies_by_default(key_file):
    from toolchain.routes import ROUTE_TABLE

    conf = render_public(render_input.make(key_file))["nginx/corral.conf"]
    entries = _map(conf, '"$request_method $uri" $corral_route_scope')
    assert entries[0] == ("default", "admin")
    assert [value for _, value in entries[1:]] == [scope for _, _, scope in ROUTE_TABLE]
    assert _nginx_scope(entries, "GET", "/v2/library/x/blobs/uploads/abc") == "admin"  # the upload session
    assert _nginx_scope(entries, "GET", "/v2/library/x/manifests/latest") == "user"
    # Only these pairs of needed scope and client scope pass; an unknown client scope never does.
    denied = _map(conf, '"$corral_need:$corral_scope" $corral_denied')
    assert denied == [("default", "1"), ("public:user", "0"), ("public:admin", "0"), ("user:user", "0"),
                      ("user:admin", "0"), ("admin:admin", "0")]
    # One decision for the whole API server, after the token check, before any location;
    # no location has a scope check of its own left to disagree with it.
    server = conf[conf.index("# The model API") :]
    server = server[: server.index("# Open WebUI")]
    checks = '    if ($corral_client = "") {\n        return 401;\n    }\n'
    checks += "    # Deny by default ($corral_denied above): the locations below only route and tune.\n"
    checks += "    if ($corral_denied) {\n        return 403;\n    }\n\n    location "
    assert checks in server
    assert server.count("return 403;") == 1 and server.index(checks) < server.index("    location ")
    assert "$corral_scope" not in server and "$corral_registry_denied" not in conf
    compose = render_public(render_input.make(key_file))["compose/corral.conf"]
    assert _route_maps(conf) == _route_maps(compose)


def _route_maps(conf: str) -> str:
    start = conf.index("# The scope each route needs")
    return conf[start : conf.index("limit_req_zone")]


@pytest.mark.parametrize(
    "request_uri, normalized",
    [
        ("/v2/library/x/blobs/uploads/..", True),  # judged as /v2/library/x/blobs/, routed as a session
        ("/v2/library/x/blobs/uploads/%2e%2E", True),
        ("/v2/library/x/blobs/uploads/.", True),
        ("/v1/../api/create", True),
        ("/v1/x/..?a=b", True),
        ("/v1/%2E%2e%2fapi/create", True),
        ("/api//tags", True),
        ("/api/%2Ftags", True),
        ("//api/tags", True),
        ("/api/tags", False),
        ("/v2/", False),
        ("/", False),
        ("/v1/models/a..b", False),
        ("/v2/library/x/.hidden", False),
        ("/v1/models?path=/../x//y", False),  # the query is not the path
        ("/v2/library/x/blobs/sha256:" + "0" * 64, False),
    ],
)
def test_a_path_nginx_would_normalize_needs_admin(key_file, request_uri, normalized):
    """nginx judges `$uri` (dot segments resolved, slashes merged) but passes the replica the
    path as sent; such a path is judged admin, whatever route it normalizes to."""
    conf = render_public(render_input.make(key_file))["nginx/corral.conf"]
    entries = _map(conf, "$request_uri $corral_need")
    assert entries[0] == ("default", "$corral_route_scope")
    [(key, value)] = entries[1:]
    assert key.startswith("~*") and value == "admin"
    assert bool(re.search(key[2:], request_uri, re.IGNORECASE)) is normalized


def test_a_route_pattern_nginx_cannot_hold_is_refused():
    from toolchain.render.nginx import _route_regex

    assert _route_regex("GET HEAD", "/api/(tags|ps)") == r"~^(?:GET|HEAD) (?:/api/(tags|ps))\z"
    for bad in ('/a"b', "/a b", "/a;b", "/a{1}", "/a$", r"/a\d"):
        with pytest.raises(ValueError, match="cannot be placed in an nginx map"):
            _route_regex("GET", bad)
