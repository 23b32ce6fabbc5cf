"""The runner process: `python -m server.runner FD` serves one model over a socket.

Wire protocol (pickled tuples over a `multiprocessing.connection.Connection` on FD):

server → runner
    ("load", LoadSpec)                               first message; answered by "ready" or "load_error"
    ("complete", rid, CompletionRequest)             answered by "accepted" or "error", then "step"s
    ("cancel", rid)                                  the consumer went away: free the slot
    ("embed", rid, texts, truncate)                  answered by "result" or "error"
    ("tokenize", rid, text, add_special, parse_special) / ("detokenize", rid, tokens)
    ("close",)                                       free everything and exit
runner → server
    ("ready", ModelInfo) | ("load_error", error_class_name, message)
    ("accepted", rid, n_prompt_tokens) | ("result", rid, value) | ("error", rid, error_class_name, message)
    ("step", [(rid, text, final_or_None, logprobs_or_None), ...])
                                                     one message per batch step for all slots;
                                                     final = {"done_reason", "stats", "context"}
                                                     or {"error": message}; logprobs = entries
                                                     of the tokens behind `text` (when asked)

Threads: the main thread runs the engine's batch loop; a reader thread receives messages,
answers tokenize/detokenize and prepares completions (tokenizing, grammar) itself, and queues
the rest for the loop, which picks them up between steps.
"""

from __future__ import annotations

import sys
import threading
from multiprocessing.connection import Connection

from server.runner.errors import InvalidRequest, RunnerError


def _error_name(e: BaseException) -> str:
    return type(e).__name__ if isinstance(e, RunnerError) else "RunnerError"


def serve(conn: Connection) -> None:
    from server.runner.engine import Engine  # imports llama.cpp

    lock = threading.Lock()

    def send(msg: tuple) -> None:
        with lock:
            conn.send(msg)

    try:
        kind, spec = conn.recv()
    except (EOFError, OSError):
        return
    try:
        engine = Engine(spec)
    except RunnerError as e:
        send(("load_error", _error_name(e), str(e)))
        return
    except Exception as e:  # noqa: BLE001 - any surprise during load is a load error
        send(("load_error", "LoadError", f"failed to load {spec.model_path}: {e}"))
        return
    send(("ready", engine.info))

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                engine.inbox.put(("close",))  # the server went away
                return
            kind = msg[0]
            try:
                if kind == "complete":
                    _, rid, req = msg
                    try:
                        active = engine.prepare(rid, req)
                    except RunnerError as e:
                        send(("error", rid, _error_name(e), str(e)))
                        continue
                    send(("accepted", rid, len(active.prompt)))
                    engine.inbox.put(("complete", active))
                elif kind == "tokenize":
                    _, rid, text, add_special, parse_special = msg
                    send(("result", rid, engine.tokenize(text, add_special, parse_special)))
                elif kind == "detokenize":
                    _, rid, tokens = msg
                    send(("result", rid, engine.detokenize(tokens)))
                else:
                    engine.inbox.put(msg)
                    if kind == "close":
                        return
            except RunnerError as e:
                send(("error", msg[1], _error_name(e), str(e)))
            except Exception as e:  # noqa: BLE001 - report, keep serving
                send(("error", msg[1] if len(msg) > 1 else -1, "RunnerError", f"{type(e).__name__}: {e}"))

    threading.Thread(target=reader, name="runner-reader", daemon=True).start()

    def handle(msg: tuple) -> bool:
        kind = msg[0]
        if kind == "complete":
            engine.admit(msg[1])
        elif kind == "cancel":
            engine.cancel(msg[1])
        elif kind == "embed":
            _, rid, texts, truncate = msg
            try:
                send(("result", rid, engine.embed(texts, truncate)))
            except RunnerError as e:
                send(("error", rid, _error_name(e), str(e)))
        elif kind == "close":
            return False
        else:
            send(("error", msg[1] if len(msg) > 1 else -1, "InvalidRequest", f"unknown message {kind!r}"))
        return True

    def emit(events: list) -> None:
        if events:
            send(("step", events))

    try:
        engine.run(emit, handle)
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not argv[0].isdigit():
        print("usage: python -m server.runner FD", file=sys.stderr)
        return 2
    conn = Connection(int(argv[0]))
    try:
        serve(conn)
    finally:
        conn.close()
    return 0


__all__ = ["main", "serve", "InvalidRequest"]
