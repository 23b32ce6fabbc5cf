"""Corral's toolchain: the `stack` CLI, stack files, Modelfiles, model names, plan/apply.

Installs and runs without llama.cpp; talks to servers only through the public Ollama API.
"""

__version__ = "0.1.0"
