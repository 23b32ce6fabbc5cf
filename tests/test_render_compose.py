"""The rendered `compose.yaml` of the shipped team stack, checked by compose tools, and the Dockerfile.

No container runs here (no registry for images): the checks are what a file can be
judged on without one.
- `docker-compose config` (Debian's docker-compose 1.29, the Python one) loads the file as
  `up` would: interpolation (`$$`), env files, volumes, `depends_on` conditions. It
  predates the Compose Specification's top-level `name:` (compose v2 reads it), so that
  one line is dropped for it.
- `dclint` (npm, pinned by scripts/install) validates it against the current Compose
  Specification schema and lints it (errors only).
- The Dockerfile that builds `corral_image`: every COPY source exists and the image runs
  `stack serve`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from tests.support.server import REPO_ROOT
from tests.support.team_stack import render_team
from toolchain.render.model import RenderInput

DOCKER_COMPOSE = shutil.which("docker-compose")
DCLINT = shutil.which("dclint") or next(
    (str(p) for p in [REPO_ROOT / ".venv" / "node_modules" / ".bin" / "dclint"] if p.is_file()), None
)
# Publishing nginx's port on every interface is the point of a server's public port (v4 and v6).
DCLINT_DISABLED = ["no-unbound-port-interfaces"]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("team") / "rendered"
    render_team(out)
    return out


def _compose(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    return subprocess.run([DOCKER_COMPOSE, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def _for_compose_1(rendered: Path, text: str) -> Path:
    """The file without the top-level `name:` (the only key compose 1.29 does not know)."""
    lines = text.splitlines(keepends=True)
    kept = [ln for ln in lines if not ln.startswith("name: ")]
    assert len(lines) - len(kept) == 1
    path = rendered / "compose-1.yaml"
    path.write_text("".join(kept))
    return path


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose; scripts/install does)")
def test_docker_compose_loads_the_rendered_file(rendered):
    path = _for_compose_1(rendered, (rendered / "compose.yaml").read_text())
    r = _compose("-f", path.name, "config", "-q", cwd=rendered)
    assert r.returncode == 0, r.stderr
    r = _compose("-f", path.name, "config", cwd=rendered)
    assert r.returncode == 0, r.stderr
    config = YAML(typ="safe").load(r.stdout)
    services = config["services"]
    assert sorted(services) == ["corral-1", "corral-2", "nginx", "open-webui"]
    assert [name for name, s in services.items() if s.get("ports")] == ["nginx"]
    for name, service in services.items():
        image = service["image"]
        assert re.fullmatch(r"[^:]+:[0-9A-Za-z][0-9A-Za-z._-]*", image) and not image.endswith(":latest"), image
        assert service["healthcheck"]["test"], name
    # `$$` in the nginx health check reaches the container as one `$` (compose interpolation).
    assert "$(curl" in " ".join(services["nginx"]["healthcheck"]["test"])
    # Each replica's store is its own named volume.
    assert {s["volumes"][0].split(":")[0] for n, s in services.items() if n.startswith("corral-")} == {
        "corral-models-1",
        "corral-models-2",
    }
    ui_env = services["open-webui"]["environment"]
    assert ui_env["OLLAMA_BASE_URLS"] == "https://llm.internal.example"
    assert ui_env["ENABLE_PERSISTENT_CONFIG"] == "false"  # read from the rendered env file


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose is not installed")
def test_docker_compose_rejects_a_broken_file(rendered):
    """The check above can fail: an unknown service key and a missing env file are errors."""
    text = (rendered / "compose.yaml").read_text().replace("    restart: unless-stopped\n", "    restrat: no\n", 1)
    r = _compose("-f", _for_compose_1(rendered, text).name, "config", "-q", cwd=rendered)
    assert r.returncode != 0 and "restrat" in r.stderr, r.stderr
    text = (rendered / "compose.yaml").read_text().replace("./open-webui/secrets.env", "./open-webui/missing.env")
    r = _compose("-f", _for_compose_1(rendered, text).name, "config", "-q", cwd=rendered)
    assert r.returncode != 0 and "missing.env" in r.stderr, r.stderr


def _dclint(path: Path) -> subprocess.CompletedProcess:
    disabled = [arg for rule in DCLINT_DISABLED for arg in ("--disable-rule", rule)]
    return subprocess.run(
        [DCLINT, str(path), "--quiet", "--color=false", *disabled], capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(DCLINT is None, reason="dclint is not installed (scripts/install adds it with npm)")
def test_the_file_follows_the_compose_specification(rendered, tmp_path):
    r = _dclint(rendered / "compose.yaml")
    assert r.returncode == 0, r.stdout + r.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text((rendered / "compose.yaml").read_text().replace("    healthcheck:\n", "    health_check:\n", 1))
    r = _dclint(bad)
    assert r.returncode != 0 and "invalid-schema" in r.stdout, r.stdout + r.stderr


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the repository's Dockerfile, continuation lines joined."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_every_dockerfile_copy_source_is_in_the_repository():
    copies = [args for word, args in _dockerfile() if word == "COPY" and not args.startswith("--from=")]
    assert copies
    for args in copies:
        *sources, _dest = shlex.split(args)
        for source in sources:
            assert (REPO_ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_the_image_runs_stack_serve_under_the_name_compose_uses():
    steps = _dockerfile()
    entry = [json.loads(args) for word, args in steps if word == "ENTRYPOINT"]
    cmd = [json.loads(args) for word, args in steps if word == "CMD"]
    assert (entry[-1] if entry else []) + (cmd[-1] if cmd else []) == ["stack", "serve"]
    # The default `corral_image` tag is the package's version (pyproject.toml), built by `docker build`.
    version = re.search(r'^version = "([^"]+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert RenderInput.model_fields["corral_image"].default == f"corral:{version}"
    assert f"docker build -t corral:{version} ." in (REPO_ROOT / "Dockerfile").read_text()
