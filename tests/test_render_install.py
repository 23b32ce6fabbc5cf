"""The team stack's nginx files installed as docs/render.md says, into Debian's own nginx configuration.

`corral.conf` goes into `conf.d/` (included at http level by Debian's nginx.conf), the
token map and the replicas' key to `/etc/nginx/` (their relative `include`s resolve against
the configuration directory; in `conf.d/` they would be read as http-level directives). A copy
of Debian's nginx.conf whose `conf.d/` is a temporary directory is checked with `nginx -t`
and the default prefix, as on a host.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.support.nginx import NGINX, self_signed
from tests.support.team_stack import render_team

DEBIAN_CONF = Path("/etc/nginx/nginx.conf")

pytestmark = [
    pytest.mark.skipif(NGINX is None or not DEBIAN_CONF.is_file(), reason="Debian's nginx is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx -t opens Debian's root-owned log files"),
]


def test_corral_conf_drops_into_debians_conf_d(tmp_path):
    rendered = tmp_path / "rendered"
    render_team(rendered)
    conf = (rendered / "nginx" / "corral.conf").read_text()
    # Every path the drop-in names is absolute, except the token include (next to nginx.conf).
    logs = re.findall(r"^\s*access_log (\S+) corral;", conf, re.M)
    assert logs and all(path.startswith("/") for path in logs), logs
    etc = tmp_path / "etc-nginx"
    (etc / "conf.d").mkdir(parents=True)
    main = DEBIAN_CONF.read_text()
    main = main.replace("/etc/nginx/conf.d/", f"{etc}/conf.d/")
    main = re.sub(r"^\s*include /etc/nginx/sites-enabled/\*;\n", "", main, flags=re.M)
    (etc / "nginx.conf").write_text(main)
    # Logs into the test's directory, not the host's /var/log (same path shape: absolute).
    # The stack's TLS files live on the proxy host; here a fresh self-signed pair stands in.
    cert, key = self_signed(tmp_path)
    conf = conf.replace("/etc/nginx/tls/llm.crt", str(cert)).replace("/etc/nginx/tls/llm.key", str(key))
    (etc / "conf.d" / "corral.conf").write_text(conf.replace("/var/log/nginx/corral.access.log", str(tmp_path / "access.log")))
    (etc / "corral-tokens.conf").write_text('    "~^(?i:bearer) +team-0123456789abcdef$" team;\n')
    (etc / "corral-upstream.conf").write_text('proxy_set_header Authorization "Bearer replica-0123456789abcdef";\n')
    r = subprocess.run([NGINX, "-t", "-c", str(etc / "nginx.conf")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    # The token map misplaced into conf.d/ is an error nginx names.
    (etc / "corral-tokens.conf").rename(etc / "conf.d" / "corral-tokens.conf")
    r = subprocess.run([NGINX, "-t", "-c", str(etc / "nginx.conf")], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "corral-tokens.conf" in r.stderr, r.stderr
