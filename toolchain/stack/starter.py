"""The commented starter stack `stack init` writes."""

STARTER = """\
# yaml-language-server: $schema=stack.schema.json   (generate it with: stack schema > stack.schema.json)
#
# A Corral stack: the models your team's servers must hold, reviewed as code.
#   stack plan           show what would change on each server
#   stack apply          make the servers match this file
#   stack diff HEAD~1    what a commit changes, from git alone
version: 1

# Servers to manage. Without targets, the server at OLLAMA_HOST (default 127.0.0.1:11434).
targets:
  local:
    url: http://127.0.0.1:11434
    # token: ${CORRAL_TOKEN}      # a bearer token, always from the environment

# Delete models a server holds that are not listed below (they are shown in the plan first).
prune: false

# Settings `stack serve -f stack.yaml` starts with (OLLAMA_* environment variables still win).
runtime:
  num_parallel: 2
  max_loaded_models: 2
  keep_alive: 5m

models:
  # A model built from a local GGUF file (path relative to this file, or ${VAR}).
  # my-base:latest:
  #   from: ./models/my-model.gguf
  #   modelfile: modelfiles/my-base.Modelfile   # TEMPLATE, PARAMETER, ... (its FROM is replaced by from:)

  # A variant of another model of the stack: its Modelfile says FROM my-base:latest.
  # support-bot:
  #   modelfile: modelfiles/support-bot.Modelfile
  #   preload: true          # load it into memory after apply
  #   keep_alive: 30m

  # A model pulled from a registry; `name@sha256:<digest>` pins the exact version.
  # qwen2.5:0.5b:
  #   pull: qwen2.5:0.5b
"""
