"""`stack serve`: an Ollama-compatible model server (store, scheduler, runners, registry).

May import the pure formats from `toolchain`; `toolchain` never imports `server`.
"""
