"""`stack run`, `stack ps` and `stack stop`: talking to a model through any Ollama-API server.

`stack run MODEL PROMPT` streams one answer from /api/generate; with stdin piped, stdin is
prepended to the prompt; with neither, the model is loaded and an interactive session
(`Session`) chats through /api/chat, with Ollama's slash commands and `\"\"\"` multi-line input.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from typing import Any, Callable, Optional, TextIO

import typer

from toolchain.cli import app
from toolchain.cli._table import human_bytes, human_time, parse_time, table
from toolchain.client import Client
from toolchain.duration import format_go_duration
from toolchain.errors import APIError, CorralError
from toolchain.options import parse_parameter

PROMPT = ">>> "
CONTINUE = "... "

HELP = """Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /save <model>   Save your current session
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Use \"\"\" to begin a multi-line message.
"""

HELP_SET = """Available Commands:
  /set parameter ...     Set a parameter
  /set system <string>   Set system message
  /set format json       Enable JSON mode
  /set noformat          Disable formatting
  /set verbose           Show LLM stats
  /set quiet             Disable LLM stats
"""

HELP_SHOW = """Available Commands:
  /show info         Show details for this model
  /show license      Show model license
  /show modelfile    Show Modelfile for this model
  /show parameters   Show parameters for this model
  /show system       Show system message
  /show template     Show prompt template
"""

HELP_PARAMETERS = """Available Parameters:
  /set parameter seed <int>             Random number seed
  /set parameter num_predict <int>      Max number of tokens to predict
  /set parameter top_k <int>            Pick from top k num of tokens
  /set parameter top_p <float>          Pick token based on sum of probabilities
  /set parameter min_p <float>          Pick token based on top token probability * min_p
  /set parameter num_ctx <int>          Set the context size
  /set parameter temperature <float>    Set creativity level
  /set parameter repeat_penalty <float> How strongly to penalize repetitions
  /set parameter repeat_last_n <int>    Set how far back to look for repetitions
  /set parameter stop <string> <string> ...   Set the stop parameters
"""

def parameter_value(name: str, values: list[str]) -> Any:
    """The typed value of `/set parameter NAME VALUE...` (Ollama's FormatParams, via the
    options table); raises ValueError with Ollama's message."""
    if name == "stop":
        return list(values)
    return parse_parameter(name, " ".join(values))


# -- output helpers --------------------------------------------------------------------------


def go_duration(ns: int) -> str:
    """Go's time.Duration.String() of `ns` nanoseconds (e.g. 5.0435s, 5.026ms)."""
    return format_go_duration(ns / 1e9)


def summary(final: dict[str, Any]) -> str:
    """Ollama's `Metrics.Summary` lines (only the values that are > 0)."""
    lines = []

    def dur(key: str, label: str) -> None:
        if final.get(key):
            lines.append(f"{label:<22}{go_duration(int(final[key]))}")

    dur("total_duration", "total duration:")
    dur("load_duration", "load duration:")
    for prefix, label in (("prompt_eval", "prompt eval"), ("eval", "eval")):
        count, ns = final.get(f"{prefix}_count") or 0, final.get(f"{prefix}_duration") or 0
        if count:
            lines.append(f"{label + ' count:':<22}{count} token(s)")
        if ns:
            lines.append(f"{label + ' duration:':<22}{go_duration(int(ns))}")
            lines.append(f"{label + ' rate:':<22}{count / (ns / 1e9):.2f} tokens/s")
    return "\n".join(lines)


def human_until(when: datetime, now: Optional[datetime] = None) -> str:
    """The UNTIL column of `ps`: `Stopping...` once expired, else Ollama's HumanTime."""
    now = now or datetime.now(timezone.utc)
    if when <= now:
        return "Stopping..."
    return human_time(when, "Never", now)


def ps_table(models: list[dict[str, Any]], now: Optional[datetime] = None) -> str:
    rows = [["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]]
    for m in models:
        size, vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        if vram == 0:
            processor = "100% CPU"
        elif vram == size:
            processor = "100% GPU"
        elif vram > size or size == 0:
            processor = "Unknown"
        else:
            cpu = round((size - vram) / size * 100)
            processor = f"{cpu}%/{100 - cpu}% CPU/GPU"
        until = human_until(parse_time(m["expires_at"]), now) if m.get("expires_at") else "Never"
        rows.append([m.get("name", ""), (m.get("digest") or "")[:12], human_bytes(size), processor,
                     str(m.get("context_length") or ""), until])
    return table(rows).rstrip("\n")


# -- sessions --------------------------------------------------------------------------------


class Session:
    """An interactive chat with one model; `handle(line)` processes one input line.

    Output goes to `out` (answers) and `err` (help and notices, as Ollama writes them to stderr).
    Returns False from `handle` when the session should end.
    """

    def __init__(self, client: Client, model: str, *, keep_alive: Optional[str] = None,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr, verbose: bool = False,
                 fmt: str = "") -> None:
        self.client = client
        self.model = model
        self.keep_alive = keep_alive
        self.out = out
        self.err = err
        self.verbose = verbose
        self.format = fmt
        self.system: Optional[str] = None
        self.options: dict[str, Any] = {}
        self.messages: list[dict[str, Any]] = []
        self._multiline: Optional[list[str]] = None
        self._multiline_target = "message"

    @property
    def prompt(self) -> str:
        return CONTINUE if self._multiline is not None else PROMPT

    def handle(self, line: str) -> bool:
        if self._multiline is not None:
            stripped = line.rstrip()
            if stripped.endswith('"""'):
                self._multiline.append(stripped[:-3])
                text = "\n".join(self._multiline)
                self._multiline = None
                return self._finish_multiline(text)
            self._multiline.append(line)
            return True
        stripped = line.strip()
        if not stripped:
            return True
        if stripped.startswith('"""') or stripped.startswith('/set system """'):
            target = "system" if stripped.startswith("/set system") else "message"
            body = stripped[len('/set system """'):] if target == "system" else stripped[3:]
            if body.endswith('"""') and (len(body) >= 3):
                return self._finish_multiline_as(target, body[:-3])
            self._multiline = [body] if body else []
            self._multiline_target = target
            return True
        if stripped.startswith("/"):
            return self.command(stripped)
        self.send(stripped)
        return True

    def _finish_multiline(self, text: str) -> bool:
        return self._finish_multiline_as(self._multiline_target, text)

    def _finish_multiline_as(self, target: str, text: str) -> bool:
        text = text.strip("\n")
        if target == "system":
            self.set_system(text)
        else:
            self.send(text)
        return True

    # -- commands ------------------------------------------------------------------------

    def command(self, line: str) -> bool:
        args = line.split()
        cmd = args[0]
        if cmd in ("/bye", "/exit"):
            return False
        if cmd in ("/?", "/help"):
            topic = args[1] if len(args) > 1 else ""
            self.err.write({"set": HELP_SET, "show": HELP_SHOW}.get(topic, HELP) + "\n")
        elif cmd == "/set":
            self._set(line, args)
        elif cmd == "/show":
            self._show(args)
        elif cmd == "/clear":
            self.messages = [m for m in self.messages if m["role"] == "system"][-1:]
            self.out.write("Cleared session context\n")
        elif cmd == "/load":
            if len(args) != 2:
                self.out.write("Usage:\n  /load <modelname>\n")
            else:
                self._load(args[1])
        elif cmd == "/save":
            if len(args) != 2:
                self.out.write("Usage:\n  /save <modelname>\n")
            else:
                self._save(args[1])
        else:
            self.out.write(f"Unknown command '{cmd}'. Type /? for help\n")
        return True

    def _set(self, line: str, args: list[str]) -> None:
        if len(args) < 2:
            self.err.write(HELP_SET + "\n")
            return
        what = args[1]
        if what == "parameter":
            if len(args) < 4:
                self.err.write(HELP_PARAMETERS + "\n")
                return
            try:
                value = parameter_value(args[2], args[3:])
            except ValueError as exc:
                self.out.write(f'Couldn\'t set parameter: "{exc}"\n')
                return
            self.options[args[2]] = value
            shown = ", ".join(args[3:])
            self.out.write(f"Set parameter '{args[2]}' to '{shown}'\n")
        elif what == "system":
            text = line.split("system", 1)[1].strip()
            self.set_system(text)
        elif what == "format" and len(args) == 3 and args[2] == "json":
            self.format = "json"
            self.out.write("Set format to 'json' mode.\n")
        elif what == "format":
            self.out.write("Invalid or missing format. For 'json' mode use '/set format json'\n")
        elif what == "noformat":
            self.format = ""
            self.out.write("Disabled format.\n")
        elif what == "verbose":
            self.verbose = True
            self.out.write("Set 'verbose' mode.\n")
        elif what == "quiet":
            self.verbose = False
            self.out.write("Set 'quiet' mode.\n")
        else:
            self.out.write(f"Unknown command '/set {what}'. Type /? for help\n")

    def set_system(self, text: str) -> None:
        self.system = text
        if self.messages and self.messages[-1]["role"] == "system":
            self.messages[-1]["content"] = text
        else:
            self.messages.append({"role": "system", "content": text})
        self.out.write("Set system message.\n")

    def _show(self, args: list[str]) -> None:
        if len(args) != 2:
            self.err.write(HELP_SHOW + "\n")
            return
        what = args[1]
        try:
            info = self.client.show(self.model)
        except APIError as exc:
            self.out.write(f"error: {exc.message}\n")
            return
        if what == "info":
            from toolchain.cli.models_cmd import show_info

            self.out.write(show_info(info) + "\n")
        elif what == "license":
            self.out.write((info.get("license") or "No license was specified for this model.") + "\n")
        elif what == "modelfile":
            self.out.write((info.get("modelfile") or "") + "\n")
        elif what == "parameters":
            params = info.get("parameters") or ""
            if params:
                self.out.write("Model defined parameters:\n" + params + "\n")
            else:
                self.out.write("Model defined parameters:\n  No additional parameters were specified for this model.\n")
            if self.options:
                self.out.write("\nUser defined parameters:\n")
                for k, v in self.options.items():
                    self.out.write(f"  {k:<30} {v}\n")
        elif what == "system":
            system = self.system if self.system is not None else info.get("system")
            self.out.write((system or "No system message was specified for this model.") + "\n")
        elif what == "template":
            self.out.write((info.get("template") or "No prompt template was specified for this model.") + "\n")
        else:
            self.out.write(f"Unknown command '/show {what}'. Type /? for help\n")

    def _load(self, model: str) -> None:
        try:
            self.client.show(model)
        except APIError:
            self.out.write(f"Couldn't find model '{model}'\n")
            return
        self.out.write(f"Loading model '{model}'\n")
        self.model = model
        self.messages = []
        self.system = None
        load(self.client, model, self.keep_alive)

    def _save(self, name: str) -> None:
        body: dict[str, Any] = {"model": name, "from": self.model, "stream": False}
        if self.system is not None:
            body["system"] = self.system
        if self.options:
            body["parameters"] = self.options
        history = [m for m in self.messages if m["role"] != "system"]
        if history:
            body["messages"] = history
        try:
            self.client.json("POST", "/api/create", body)
        except APIError as exc:
            if "invalid" in exc.message and "name" in exc.message:
                self.out.write(f"error: The model name '{name}' is invalid\n")
            else:
                self.out.write(f"error: {exc.message}\n")
            return
        self.out.write(f"Created new model '{name}'\n")

    # -- chatting --------------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.messages.append({"role": "user", "content": text})
        body: dict[str, Any] = {"model": self.model, "messages": self.messages, "stream": True}
        if self.options:
            body["options"] = self.options
        if self.format:
            body["format"] = self.format
        if self.keep_alive is not None:
            body["keep_alive"] = self.keep_alive
        answer: list[str] = []
        final: dict[str, Any] = {}
        display = Display(self.out)
        try:
            for chunk in self.client.chat(body):
                message = chunk.get("message") or {}
                piece = message.get("content", "")
                display.write(message.get("thinking", ""), piece)
                if piece:
                    answer.append(piece)
                if chunk.get("done"):
                    final = chunk
        except KeyboardInterrupt:
            self.out.write("\n")
            self.messages.pop()
            return
        except APIError as exc:
            self.messages.pop()
            self.out.write(f"\nError: {exc.message}\n")
            return
        self.out.write("\n\n")
        self.messages.append({"role": "assistant", "content": "".join(answer)})
        if self.verbose and final:
            self.err.write(summary(final) + "\n")


class Display:
    """Writes an answer as it streams, a thinking model's reasoning first between Ollama's
    "Thinking..." and "...done thinking." lines (grey on a terminal)."""

    GREY, BOLD, RESET = "\x1b[90m", "\x1b[1m", "\x1b[0m"

    def __init__(self, out: TextIO) -> None:
        self.out = out
        isatty = getattr(out, "isatty", None)
        self.colour = bool(isatty and isatty())
        self.thinking = False  # inside the reasoning block
        self.last = ""

    def _style(self, text: str, *codes: str) -> str:
        return "".join(codes) + text + self.RESET if self.colour else text

    def write(self, thinking: str, content: str) -> None:
        if thinking:
            if not self.thinking:
                self.out.write(self._style("Thinking...\n", self.GREY, self.BOLD))
                self.thinking = True
            self.out.write(self._style(thinking, self.GREY))
            self.last = thinking
        if content:
            self.close()
            self.out.write(content)
        self.out.flush()

    def close(self) -> None:
        if self.thinking:
            self.out.write(("" if self.last.endswith("\n") else "\n")
                           + self._style("...done thinking.\n\n", self.GREY, self.BOLD))
            self.thinking = False


def load(client: Client, model: str, keep_alive: Optional[str]) -> None:
    body: dict[str, Any] = {"model": model, "stream": False}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    client.json("POST", "/api/generate", body)


def generate_once(client: Client, model: str, prompt: str, *, keep_alive: Optional[str], fmt: str,
                  verbose: bool, out: TextIO, err: TextIO) -> None:
    body: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    if fmt:
        body["format"] = fmt
    final: dict[str, Any] = {}
    display = Display(out)
    for chunk in client.generate(body):
        display.write(chunk.get("thinking", ""), chunk.get("response", ""))
        if chunk.get("done"):
            final = chunk
    out.write("\n")
    if verbose and final:
        err.write(summary(final) + "\n")


def repl(session: Session, read: Callable[[str], str]) -> None:
    """Run `session` until /bye or end of input; Ctrl+C on an empty line only reminds."""
    while True:
        try:
            line = read(session.prompt)
        except EOFError:
            session.out.write("\n")
            return
        except KeyboardInterrupt:
            session.out.write("\nUse Ctrl + d or /bye to exit.\n")
            continue
        if not session.handle(line):
            return


def _check_model(client: Client, model: str, *, insecure: bool = False) -> dict[str, Any]:
    """The model's /api/show; a model the server does not have is pulled first, as `ollama run`
    does (progress on stderr)."""
    try:
        return client.show(model)
    except APIError as exc:
        if exc.status != 404:
            raise
    from toolchain.progress import show_progress

    show_progress(client.pull(model, insecure=insecure))
    return client.show(model)


def embed_once(client: Client, model: str, text: str, keep_alive: Optional[str], out: TextIO) -> None:
    """An embedding model's answer: the vector as a JSON array (as `ollama run` prints it)."""
    if not text:
        raise CorralError(f'embedding models require input text. Usage: stack run {model} "your text here"')
    body: dict[str, Any] = {"model": model, "input": text}
    if keep_alive is not None:
        body["keep_alive"] = keep_alive
    vectors = client.json("POST", "/api/embed", body).get("embeddings") or [[]]
    out.write(json.dumps(vectors[0]) + "\n")


@app.command("run")
def run_command(
    model: str = typer.Argument(..., help="Model to run."),
    prompt: Optional[list[str]] = typer.Argument(None, help="Prompt (omit for an interactive session)."),
    keepalive: Optional[str] = typer.Option(None, "--keepalive", help="How long the model stays loaded (e.g. 5m)."),
    verbose: bool = typer.Option(False, "--verbose", help="Show timings for each response."),
    fmt: str = typer.Option("", "--format", help='Response format (e.g. "json").'),
    insecure: bool = typer.Option(False, "--insecure", help="Pull a missing model over plain HTTP."),
) -> None:
    """Run a model (pulling it first if the server does not have it): one answer to PROMPT (or
    piped stdin), else an interactive chat."""
    if fmt and fmt != "json":
        raise CorralError(f'invalid format "{fmt}" (only "json" is supported)')
    text = " ".join(prompt or [])
    piped = not sys.stdin.isatty()
    if piped:
        data = sys.stdin.read()
        text = f"{data} {text}" if text else data
    with Client() as client:
        caps = _check_model(client, model, insecure=insecure).get("capabilities") or []
        if "embedding" in caps and "completion" not in caps:
            embed_once(client, model, text.strip(), keepalive, sys.stdout)
            return
        if text or piped:
            generate_once(client, model, text, keep_alive=keepalive, fmt=fmt, verbose=verbose,
                          out=sys.stdout, err=sys.stderr)
            return
        load(client, model, keepalive)
        session = Session(client, model, keep_alive=keepalive, verbose=verbose, fmt=fmt)
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:  # pragma: no cover - not on every platform
            pass
        repl(session, input)


@app.command("ps")
def ps_command(
    prefix: Optional[str] = typer.Argument(None, help="Only models whose name starts with this."),
) -> None:
    """List running models."""
    with Client() as client:
        models = client.ps()
    if prefix:
        models = [m for m in models if m.get("name", "").lower().startswith(prefix.lower())]
    typer.echo(ps_table(models))


@app.command("stop")
def stop_command(
    model: str = typer.Argument(..., help="Model to unload."),
) -> None:
    """Unload a running model."""
    with Client() as client:
        try:
            client.json("POST", "/api/generate", {"model": model, "keep_alive": 0, "stream": False})
        except APIError as exc:
            if exc.status == 404:
                raise CorralError(f'couldn\'t find model "{model}" to stop') from None
            raise


__all__ = ["Session", "generate_once", "human_until", "parameter_value", "ps_table", "repl",
           "summary"]
