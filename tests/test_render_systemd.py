"""The rendered systemd units of the shipped team stack, checked by systemd's own tools.

`systemd-analyze verify` loads each unit the way systemd would (unknown or misspelled
directives, bad values, a missing or non-executable ExecStart) and needs no running
systemd; `systemd-analyze security --offline=yes` scores the hardening of a unit file.
The unit's executables are rendered to point at a stand-in script (verify checks the
ExecStart path exists on this machine); everything else is the team stack's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.team_stack import render_team
from toolchain.render import systemd

ANALYZE = shutil.which("systemd-analyze")

pytestmark = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package systemd; scripts/install adds it)"
)

#: Highest overall exposure allowed, in systemd-analyze's tenths (1.0 = 10; the scale is 0-100).
MAX_EXPOSURE = 20


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture(scope="module")
def units(tmp_path_factory) -> dict[str, Path]:
    """The team stack's units, written under their own names (verify reads the name)."""
    root = tmp_path_factory.mktemp("systemd")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for name in ("stack", "open-webui"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    render_team(root / "rendered", stack_bin=str(bin_dir / "stack"), webui_bin=str(bin_dir / "open-webui"))
    return {Path(rel).name: root / "rendered" / rel for rel in (systemd.CORRAL_UNIT, systemd.WEBUI_UNIT)}


def test_systemd_analyze_verify_accepts_the_units(units):
    r = _run("verify", "--man=no", *map(str, units.values()))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.strip() == "", r.stderr  # no warning either (unknown directive, bad value, ...)


def test_verify_would_catch_a_broken_unit(units, tmp_path):
    """The check above can fail: a misspelled directive and a bad value are reported."""
    text = units["corral.service"].read_text()
    broken = tmp_path / "corral.service"
    broken.write_text(text.replace("ProtectSystem=strict", "ProtectSystem=very").replace("Restart=", "Restrat="))
    r = _run("verify", "--man=no", str(broken))
    assert "Unknown key 'Restrat'" in r.stderr and "protect system value, ignoring: very" in r.stderr, r.stderr


@pytest.mark.parametrize("name", ["corral.service", "open-webui.service"])
def test_the_units_hardening_scores_well(units, name):
    r = _run("security", "--offline=yes", f"--threshold={MAX_EXPOSURE}", "--json=short", str(units[name]))
    checks = json.loads(r.stdout)
    exposed = sorted(c["name"] for c in checks if c.get("exposure") and not c["set"] and float(c["exposure"]) >= 0.2)
    assert r.returncode == 0, f"{name}: exposure over {MAX_EXPOSURE / 10}; biggest gaps: {exposed}\n{r.stderr}"
    by_field = {c["json_field"]: c for c in checks}
    for field in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "CapabilityBoundingSet_CAP_SYS_ADMIN"):
        if field in by_field:
            assert by_field[field]["set"], (name, field)
