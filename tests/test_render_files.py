"""The render I/O edge: secrets from the environment, atomic writes, foreign files, --check, nginx -t."""

from __future__ import annotations

import re
import shutil
import stat

import pytest

from tests.support import render_input
from toolchain.render import render_public, render_secret
from toolchain.render import files
from toolchain.render.model import RenderInput
from toolchain.render.secrets import RenderError, collect

needs_nginx = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx is not on PATH")


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "webui-secret-key"
    path.write_text("k3y-0123456789abcdef-stable\n")
    return path


def _render(inp, env, out, **kw):
    secrets = collect(inp, env)
    return files.write(out, render_public(inp), render_secret(inp, secrets), **kw)


@pytest.mark.parametrize(
    "env_change, message",
    [
        ({"OPS_TOKEN": None}, "environment variable OPS_TOKEN (token of proxy client 'ops') is not set"),
        ({"OPS_TOKEN": "  "}, "environment variable OPS_TOKEN (token of proxy client 'ops') is empty"),
        ({"OPS_TOKEN": "short"}, "OPS_TOKEN (token of proxy client 'ops') is not a usable bearer token"),
        ({"OPS_TOKEN": 'has"quote-0123456789'}, "is not a usable bearer token"),
        ({"OPS_TOKEN": "alice-0123456789abcdef"}, "proxy clients 'alice' and 'ops' have the same token"),
        ({"WEBUI_ADMIN_PASSWORD": None}, "environment variable WEBUI_ADMIN_PASSWORD (Open WebUI admin password) is not set"),
        ({"WEBUI_ADMIN_PASSWORD": "it's"}, "WEBUI_ADMIN_PASSWORD must not contain '"),
    ],
)
def test_bad_environment_names_the_variable_and_writes_nothing(tmp_path, key_file, env_change, message):
    env = render_input.environment()
    for key, value in env_change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    out = tmp_path / "rendered"
    with pytest.raises(RenderError) as err:
        _render(render_input.make(key_file), env, out)
    assert message in str(err.value)
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["webui-secret-key"]


def test_missing_tls_key_and_secret_key_file(tmp_path, key_file):
    cert = tmp_path / "cert.pem"
    cert.write_text("x")
    data = render_input.stack_data(key_file)
    data["proxy"]["tls"] = {"cert": str(cert), "key": str(tmp_path / "missing.key")}
    data["proxy"]["server_name"] = "llm.example.org"
    inp = render_input.RenderInput.model_validate(data)
    with pytest.raises(RenderError, match=f"TLS key {tmp_path / 'missing.key'} does not exist"):
        collect(inp, render_input.environment())
    key_file.unlink()
    with pytest.raises(RenderError, match="secret key file .* does not exist"):
        collect(render_input.make(key_file), render_input.environment())


def test_write_sets_modes_manifest_and_is_byte_identical_on_rerender(tmp_path, key_file):
    out = tmp_path / "rendered"
    inp = render_input.make(key_file)
    written = _render(inp, render_input.environment(), out, validate=False)
    assert ".corral-render.json" in written
    modes = {p: stat.S_IMODE((out / p).stat().st_mode) for p in written}
    assert modes["nginx/corral-tokens.conf"] == 0o600
    assert modes["open-webui/secrets.env"] == 0o600
    assert modes["nginx/corral.conf"] == 0o644
    before = {p: (out / p).read_bytes() for p in written}
    _render(inp, render_input.environment(), out, validate=False)
    assert {p: (out / p).read_bytes() for p in written} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rendered", "webui-secret-key"]  # no temp dirs left


def test_foreign_files_are_never_overwritten(tmp_path, key_file):
    out = tmp_path / "rendered"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RenderError, match=r"contains files Corral did not write \(notes.txt\)"):
        _render(render_input.make(key_file), render_input.environment(), out, validate=False)
    assert (out / "notes.txt").read_text() == "mine"
    # A Corral-rendered directory refuses a file added by hand as well.
    out2 = tmp_path / "rendered2"
    _render(render_input.make(key_file), render_input.environment(), out2, validate=False)
    (out2 / "nginx" / "extra.conf").write_text("server {}")
    with pytest.raises(RenderError, match="nginx/extra.conf"):
        _render(render_input.make(key_file), render_input.environment(), out2, validate=False)


def test_nginx_runtime_dir_survives_a_rerender(tmp_path, key_file):
    out = tmp_path / "rendered"
    _render(render_input.make(key_file), render_input.environment(), out, validate=False)
    assert (out / "nginx" / "var").is_dir()  # empty: `nginx -p` needs it for its pid and logs
    (out / "nginx" / "var" / "access.log").write_text("line\n")
    _render(render_input.make(key_file), render_input.environment(), out, validate=False)
    assert (out / "nginx" / "var" / "access.log").read_text() == "line\n"


def test_exchange_swaps_two_directories_in_one_step(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "new.conf").write_text("new")
    (b / "old.conf").write_text("old")
    assert files._exchange(a, b)  # Linux with renameat2, as this suite runs on
    assert [p.name for p in b.iterdir()] == ["new.conf"] and [p.name for p in a.iterdir()] == ["old.conf"]
    with pytest.raises(FileNotFoundError):
        files._exchange(a, tmp_path / "missing")


def test_rerender_without_an_atomic_exchange_falls_back_to_two_renames(tmp_path, key_file, monkeypatch):
    out = tmp_path / "rendered"
    _render(render_input.make(key_file), render_input.environment(), out, validate=False)
    (out / "nginx" / "var" / "error.log").write_text("kept\n")
    monkeypatch.setattr(files, "_exchange", lambda a, b: False)
    written = _render(render_input.make(key_file), render_input.environment(), out, validate=False)
    assert all((out / p).is_file() for p in written)
    assert (out / "nginx" / "var" / "error.log").read_text() == "kept\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rendered", "webui-secret-key"]


def test_check_finds_a_hand_edit_a_removed_file_and_nothing_else(tmp_path, key_file):
    out = tmp_path / "rendered"
    inp = render_input.make(key_file)
    _render(inp, render_input.environment(), out, validate=False)
    public = render_public(inp)
    assert files.check(out, public) == ""
    conf = out / "nginx" / "corral.conf"
    conf.write_text(conf.read_text().replace("proxy_read_timeout 600s;", "proxy_read_timeout 60s;"))
    (out / "open-webui" / "secrets.env").write_text("edited secrets are not compared\n")
    diff = files.check(out, public)
    assert diff.startswith("--- a/nginx/corral.conf\n+++ b/nginx/corral.conf\n")
    assert "-    proxy_read_timeout 60s;\n+    proxy_read_timeout 600s;\n" in diff
    assert "secrets.env" not in diff
    # A stack without the UI no longer renders the Open WebUI files: they show as removed.
    no_ui = render_public(render_input.make(key_file, webui=None))
    diff = files.check(out, no_ui)
    assert "--- a/open-webui/models.json\n+++ /dev/null\n" in diff
    assert files.check(tmp_path / "never-rendered", public).count("--- /dev/null") == len(public)


@needs_nginx
def test_nginx_t_accepts_the_rendered_config(tmp_path, key_file):
    out = tmp_path / "rendered"
    _render(render_input.make(key_file), render_input.environment(), out)
    assert (out / "nginx" / "corral.conf").is_file()
    # nginx -t ran in the temporary copy; the set has an empty var/ for nginx's runtime files.
    assert [p.name for p in (out / "nginx" / "var").iterdir()] == []


@needs_nginx
def test_nginx_t_failure_fails_the_render_and_keeps_the_old_files(tmp_path, key_file):
    out = tmp_path / "rendered"
    _render(render_input.make(key_file), render_input.environment(), out)
    before = (out / "nginx" / "corral.conf").read_text()
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    data = render_input.stack_data(key_file)
    data["proxy"]["tls"] = {"cert": str(cert), "key": str(key)}
    data["proxy"]["server_name"] = "llm.example.org"
    with pytest.raises(RenderError, match="nginx -t rejected the rendered config: .*cert.pem"):
        _render(render_input.RenderInput.model_validate(data), render_input.environment(), out)
    assert (out / "nginx" / "corral.conf").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem", "key.pem", "rendered", "webui-secret-key"]


def test_changes_lists_what_a_render_would_do(tmp_path, key_file):
    out = tmp_path / "rendered"
    inp = render_input.make(key_file)
    public = render_public(inp)
    assert files.changes(out, public) == [("create", rel) for rel in sorted(public)]
    _render(inp, render_input.environment(), out, validate=False)
    assert files.changes(out, public) == []
    smaller = render_public(render_input.make(key_file, webui=None, replicas=["127.0.0.1:11434"]))
    assert files.changes(out, smaller) == [
        ("update", ".gitignore"),
        ("update", "compose.yaml"),
        ("update", "compose/corral.conf"),
        ("update", "nginx/corral.conf"),
        ("delete", "open-webui/models.json"),
        ("delete", "open-webui/open-webui.env"),
        ("delete", "systemd/open-webui.service"),
    ]


@needs_nginx
def test_operator_provided_token_file_is_included_not_written(tmp_path, key_file):
    tokens = tmp_path / "tokens.conf"
    tokens.write_text('"~^(?i:bearer) +from-the-vault-0123456789$" alice;\n')
    data = render_input.stack_data(key_file)
    data["proxy"]["tokens_file"] = str(tokens)
    for client in data["proxy"]["clients"]:
        if client["name"] != "webui":
            client.pop("token_env")
    inp = render_input.RenderInput.model_validate(data)
    env = {"WEBUI_TOKEN": "webui_0123456789abcdef", "WEBUI_ADMIN_PASSWORD": "pw-0123456789"}
    out = tmp_path / "rendered"
    written = _render(inp, env, out)  # nginx -t reads the operator's file
    assert "nginx/corral-tokens.conf" not in written
    assert f"    include {tokens};\n" in (out / "nginx" / "corral.conf").read_text()
    assert "webui_0123456789abcdef" in (out / "open-webui" / "secrets.env").read_text()


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "environment variable REPLICA_KEY (the replicas' API key that nginx sends) is not set"),
        ("short", "environment variable REPLICA_KEY (the replicas' API key) is not a usable bearer token"),
        ("alice-0123456789abcdef", "REPLICA_KEY (the replicas' API key) holds the token of proxy client 'alice'"),
    ],
)
def test_the_upstream_key_variable_is_checked_before_anything_is_written(key_file, value, message):
    data = render_input.stack_data(key_file)
    data["proxy"]["upstream_token_env"] = "REPLICA_KEY"
    inp = RenderInput.model_validate(data)
    env = render_input.environment(**({"REPLICA_KEY": value} if value is not None else {}))
    with pytest.raises(RenderError, match=re.escape(message)):
        collect(inp, env)
