"""The server's handle on a runner process (asyncio).

Usage::

    runner = await Runner.start(LoadSpec(model_path=..., num_ctx=4096, num_parallel=4), load_timeout=300)
    runner.info                              # ModelInfo: n_ctx_per_slot, n_ctx_train, n_vocab,
                                             # chat_template, bos/eos, embedding_length, metadata
    stream = await runner.completion(CompletionRequest(prompt="...", options=SamplingOptions(...)))
    # ↑ raises InvalidRequest (bad grammar/schema/token ids) before anything is scheduled
    async for chunk in stream:               # Chunk(text[, logprobs]) ... Chunk("", done=True, done_reason, stats, context)
        ...
    await stream.aclose()                    # or leave the loop / `async with stream:`; frees the slot
    res = await runner.embed(["a", "b"], truncate=True)   # EmbedResult (L2-normalised vectors)
    ids = await runner.tokenize("text", add_special=True, parse_special=True)
    text = await runner.detokenize(ids)
    await runner.close()                     # frees the model; the process exits

    runner.alive, runner.pid, runner.active_requests

One process per loaded model (`python -m server.runner FD`, protocol in process.py): a crash in
llama.cpp fails that runner's in-flight requests with RunnerCrashed and nothing else; closing it
returns its memory to the OS. Text arrives once per batch step for all streams in one message;
a consumer that falls behind gets the queued pieces merged into one chunk (the runner never
waits for a consumer).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from server.runner.errors import (
    BY_NAME,
    InvalidRequest,
    LoadError,
    LoadTimeout,
    RunnerClosed,
    RunnerCrashed,
    RunnerError,
)
from server.runner.types import (
    Chunk,
    CompletionRequest,
    EmbedResult,
    LoadSpec,
    ModelInfo,
    SamplingOptions,
    Stats,
)

_ROOT = str(Path(__file__).resolve().parents[2])  # the directory that holds the `server` package


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "exited"
    if code < 0:
        try:
            return f"was killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


class Completion:
    """An accepted generation: async-iterate for Chunks; aclose() (or leaving `async with`) stops it."""

    def __init__(self, runner: "Runner", rid: int, prompt_tokens: int) -> None:
        self._runner = runner
        self.rid = rid
        self.prompt_tokens = prompt_tokens  # after truncation
        self._texts: list[str] = []
        self._lps: list[dict] = []  # logprob entries not handed out yet
        self._final: dict | None = None
        self._error: BaseException | None = None
        self._event = asyncio.Event()
        self._finished = False  # final chunk delivered (or error raised)
        self._closed = False

    # fed by the runner's dispatcher (event-loop thread)
    def _feed(self, text: str, final: dict | None, logprobs: list[dict] | None = None) -> None:
        if text:
            self._texts.append(text)
        if logprobs:
            self._lps.extend(logprobs)
        if final is not None:
            if "error" in final:
                self._error = RunnerError(final["error"])
            else:
                self._final = final
        self._event.set()

    def _fail(self, exc: BaseException) -> None:
        if self._error is None and self._final is None:
            self._error = exc
        self._event.set()

    def __aiter__(self) -> "Completion":
        return self

    async def __anext__(self) -> Chunk:
        while True:
            if self._finished or self._closed:
                raise StopAsyncIteration
            if self._texts:
                text = self._texts[0] if len(self._texts) == 1 else "".join(self._texts)
                self._texts.clear()
                return Chunk(text, logprobs=self._take_lps())
            if self._error is not None:
                self._finished = True
                self._runner._streams.pop(self.rid, None)
                raise self._error
            if self._final is not None:
                self._finished = True
                self._runner._streams.pop(self.rid, None)
                f = self._final
                return Chunk("", done=True, done_reason=f["done_reason"], stats=Stats(**f["stats"]), context=f["context"],
                             logprobs=self._take_lps())
            self._event.clear()
            await self._event.wait()

    def _take_lps(self) -> list[dict] | None:
        if not self._lps:
            return None
        lps, self._lps = self._lps, []
        return lps

    async def aclose(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._runner._streams.pop(self.rid, None) is not None and not self._finished:
            self._runner._send_nowait(("cancel", self.rid))

    async def __aenter__(self) -> "Completion":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._cancel()

    def __del__(self) -> None:  # safety net: an abandoned stream still frees its slot
        try:
            if not self._closed and not self._finished:
                self._cancel()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


class Runner:
    """Handle on one runner process. Create with `await Runner.start(spec, load_timeout=...)`."""

    def __init__(self, spec: LoadSpec, proc: subprocess.Popen, conn: Connection, info: ModelInfo) -> None:
        self.spec = spec
        self.info = info
        self._proc = proc
        self._conn = conn
        self._loop = asyncio.get_running_loop()
        self._ids = itertools.count(1)
        self._streams: dict[int, Completion] = {}
        self._futures: dict[int, asyncio.Future] = {}
        self._send_lock = threading.Lock()
        self._closing = False
        self._dead: RunnerError | None = None
        self._reader = threading.Thread(target=self._read_loop, name=f"runner-{proc.pid}", daemon=True)
        self._reader.start()

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    async def start(cls, spec: LoadSpec, *, load_timeout: float = 300.0) -> "Runner":
        """Start a runner process and load the model; raises LoadError / LoadTimeout."""
        parent_sock, child_sock = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = _ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        try:
            proc = subprocess.Popen(
                [sys.executable, "-m", "server.runner", str(child_sock.fileno())],
                pass_fds=(child_sock.fileno(),),
                env=env,
                stdin=subprocess.DEVNULL,
                cwd=_ROOT,
            )
        finally:
            child_sock.close()
        conn = Connection(os.dup(parent_sock.fileno()))
        parent_sock.close()
        name = spec.name or spec.model_path

        def handshake() -> tuple:
            conn.send(("load", spec))
            return conn.recv()

        try:
            msg = await asyncio.wait_for(asyncio.to_thread(handshake), load_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            conn.close()
            raise LoadTimeout(f"timed out after {load_timeout:g}s loading model {name}") from None
        except (EOFError, OSError):
            code = await asyncio.to_thread(proc.wait)
            conn.close()
            raise LoadError(f"runner for model {name} {_describe_exit(code)} while loading") from None
        except BaseException:
            proc.kill()
            conn.close()
            raise
        if msg[0] != "ready":
            await asyncio.to_thread(proc.wait)
            conn.close()
            raise BY_NAME.get(msg[1], LoadError)(msg[2])
        return cls(spec, proc, conn, msg[1])

    async def close(self) -> None:
        """Stop the runner: in-flight requests fail with RunnerClosed; memory goes back to the OS."""
        if self._closing:
            await asyncio.to_thread(self._proc.wait)
            return
        self._closing = True
        self._fail_all(RunnerClosed(f"model {self.spec.name or self.spec.model_path} was unloaded"))
        try:
            self._send_nowait(("close",))
        except RunnerError:
            pass
        try:
            await asyncio.wait_for(asyncio.to_thread(self._proc.wait), 10)
        except asyncio.TimeoutError:
            self._proc.kill()
            await asyncio.to_thread(self._proc.wait)
        try:
            self._conn.close()
        except OSError:
            pass

    @property
    def alive(self) -> bool:
        return self._dead is None and not self._closing and self._proc.poll() is None

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def active_requests(self) -> int:
        return len(self._streams)

    # --- requests ----------------------------------------------------------------------------

    async def completion(self, req: CompletionRequest) -> Completion:
        """Submit a generation; returns once the runner accepted it (prompt tokenized, grammar
        built). Raises InvalidRequest before scheduling for a bad grammar/schema/prompt."""
        if not isinstance(req.options, SamplingOptions):
            req = CompletionRequest(
                prompt=req.prompt, options=SamplingOptions.from_options(req.options), grammar=req.grammar,
                format=req.format, add_special=req.add_special, logprobs=req.logprobs, top_logprobs=req.top_logprobs,
            )
        rid = next(self._ids)
        stream = Completion(self, rid, 0)
        self._streams[rid] = stream
        fut = self._loop.create_future()
        self._futures[rid] = fut
        try:
            self._send_nowait(("complete", rid, req))
            stream.prompt_tokens = await fut
        except BaseException:
            self._futures.pop(rid, None)
            if self._streams.pop(rid, None) is not None and self.alive:
                stream._closed = True
                try:
                    self._send_nowait(("cancel", rid))
                except RunnerError:
                    pass
            raise
        return stream

    async def embed(self, texts: list[str], truncate: bool = True) -> EmbedResult:
        """L2-normalised embeddings (mean pooling for generative models). InputTooLong when a text
        exceeds the context and truncate is False."""
        if isinstance(texts, str):
            texts = [texts]
        value = await self._call("embed", list(texts), bool(truncate))
        return EmbedResult(**value)

    async def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        return await self._call("tokenize", text, add_special, parse_special)

    async def detokenize(self, tokens: list[int]) -> str:
        return await self._call("detokenize", list(tokens))

    # --- plumbing ----------------------------------------------------------------------------

    async def _call(self, kind: str, *args: Any) -> Any:
        rid = next(self._ids)
        fut = self._loop.create_future()
        self._futures[rid] = fut
        try:
            self._send_nowait((kind, rid, *args))
            return await fut
        finally:
            self._futures.pop(rid, None)

    def _send_nowait(self, msg: tuple) -> None:
        if self._dead is not None:
            raise self._dead
        if self._closing and msg[0] != "close":
            raise RunnerClosed(f"model {self.spec.name or self.spec.model_path} was unloaded")
        try:
            with self._send_lock:
                self._conn.send(msg)
        except (OSError, EOFError, ValueError):
            raise RunnerCrashed(f"runner for model {self.spec.name or self.spec.model_path} is gone") from None

    def _read_loop(self) -> None:
        conn = self._conn
        call = self._loop.call_soon_threadsafe
        try:
            while True:
                msg = conn.recv()
                call(self._dispatch, msg)
        except (EOFError, OSError, ValueError):
            pass
        except RuntimeError:  # the event loop was closed under a live runner
            self._proc.kill()
        code = self._proc.wait()
        try:
            call(self._on_exit, code)
        except RuntimeError:  # event loop closed
            pass

    def _dispatch(self, msg: tuple) -> None:
        kind = msg[0]
        if kind == "step":
            streams = self._streams
            for rid, text, final, logprobs in msg[1]:
                s = streams.get(rid)
                if s is not None:
                    s._feed(text, final, logprobs)
            return
        fut = self._futures.pop(msg[1], None)
        if kind == "error":
            exc = BY_NAME.get(msg[2], RunnerError)(msg[3])
            self._streams.pop(msg[1], None)
            if fut is not None and not fut.done():
                fut.set_exception(exc)
        elif fut is not None and not fut.done():
            fut.set_result(msg[2])  # "accepted" (prompt token count) or "result"

    def _on_exit(self, code: int | None) -> None:
        name = self.spec.name or self.spec.model_path
        if self._closing:
            self._dead = RunnerClosed(f"model {name} was unloaded")
        else:
            self._dead = RunnerCrashed(f"runner for model {name} {_describe_exit(code)}")
        self._fail_all(self._dead)

    def _fail_all(self, exc: RunnerError) -> None:
        for s in list(self._streams.values()):
            s._fail(exc)
        self._streams.clear()
        for f in list(self._futures.values()):
            if not f.done():
                f.set_exception(exc)
        self._futures.clear()


__all__ = [
    "Runner", "Completion", "LoadSpec", "ModelInfo", "CompletionRequest", "SamplingOptions", "Chunk",
    "Stats", "EmbedResult", "InvalidRequest",
]
