"""The toolchain installs and runs without the server extra (a CI job runs `stack plan` without llama.cpp)."""

import subprocess
import sys

# Packages a toolchain-only install (`pip install .`) does not have. click is vendored by typer.
BLOCKED = ["fastapi", "starlette", "uvicorn", "llama_cpp", "gguf", "numpy", "jinja2", "prometheus_client", "click", "server"]

SCRIPT = f"""
import importlib, pkgutil, sys
for name in {BLOCKED!r}:
    sys.modules[name] = None  # any import of it raises ImportError
import toolchain
for mod in pkgutil.walk_packages(toolchain.__path__, "toolchain."):
    if not mod.name.endswith(".__main__"):
        importlib.import_module(mod.name)
from toolchain.cli import main
sys.exit(main(["--help"]))
"""


def test_every_toolchain_module_imports_without_server_dependencies():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout
