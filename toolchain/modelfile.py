"""The Modelfile: Ollama's parser, its rendering, and the create request it describes.

``parse`` reproduces the state machine of Ollama's ``parser.ParseFile`` rune for
rune (the same commands, the same error texts), ``format`` renders commands back
the way ``Modelfile.String`` does, and ``to_create_request`` turns a parsed file
into the body of ``POST /api/create`` the way Ollama's client does, except that
reading local files is left to the caller.

Commands are ``Command(name, args)`` tuples with Ollama's internal names:
``FROM`` -> ``model``, ``MESSAGE role text`` -> ``("message", "role: text")``,
``PARAMETER name value`` -> ``(name, value)``, every other keyword lower-cased.

The lexical rules in short (see docs/ollama-compat.md in the research notes, 5.2):

* keywords are ASCII letters, case-insensitive, followed by a space or tab;
* ``#`` starts a comment only as the first non-blank character of a line;
* a value runs to the end of the line, trimmed; a value that starts with ``"`` or
  ``\"\"\"`` continues across lines until it ends with the same quote;
* only printable characters are kept, except the spaces, tabs and line breaks that
  belong to a value;
* input bytes with a UTF-8 BOM or a UTF-16 (LE/BE) BOM are decoded accordingly.

The parser also remembers comments and blank lines (``Modelfile.trivia``) so that
``stack modelfile fmt`` can keep them; they play no part in equality.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from toolchain.errors import CorralError
from toolchain.names import is_digest, parse_name

__all__ = [
    "KEYWORDS",
    "MESSAGE_ROLES",
    "CheckResult",
    "Command",
    "CreateRequest",
    "LocalPath",
    "Modelfile",
    "ModelfileError",
    "check",
    "expand_path",
    "format",
    "parse",
    "to_create_request",
]

#: Every keyword Ollama's current parser accepts, in the order of its error message.
KEYWORDS = (
    "from", "license", "template", "system", "adapter", "draft",
    "renderer", "parser", "parameter", "message", "requires",
)
MESSAGE_ROLES = ("system", "user", "assistant")

ERR_MISSING_FROM = "no FROM line"
ERR_INVALID_COMMAND = (
    'command must be one of "from", "license", "template", "system", "adapter", "draft", '
    '"renderer", "parser", "parameter", "message", or "requires"'
)
ERR_INVALID_ROLE = 'message role must be one of "system", "user", or "assistant"'
ERR_EOF = "unexpected EOF"

# Internal names of the non-PARAMETER instructions.
_INSTRUCTION_NAMES = frozenset(
    {"model", "adapter", "license", "template", "system", "message", "renderer", "parser", "requires", "draft"}
)
# Commands rendered as ``KEYWORD <value>``; everything not listed is a PARAMETER.
_PLAIN_KEYWORDS = frozenset(
    {"license", "template", "system", "adapter", "renderer", "parser", "requires", "draft"}
)


class ModelfileError(CorralError, ValueError):
    """A Modelfile that Ollama would reject.

    ``str(err)`` is Ollama's exact text (``(line 3): command must be one of ...``,
    ``unexpected EOF: param1``, ``no FROM line``, ``unknown parameter 'foo'``...).
    ``detail`` is that text without Ollama's ``(line N): `` prefix, ``line`` the
    1-based line (CRLF counted once) of the instruction at fault, or None when the
    error is about the whole file. ``kind`` is one of ``missing_from``,
    ``unexpected_eof``, ``parser_error``, ``invalid_value``.
    """

    def __init__(self, message: str, *, detail: str | None = None, line: int | None = None,
                 kind: str = "invalid_value") -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail
        self.line = line
        self.kind = kind


class Command(NamedTuple):
    """One instruction: Ollama's internal name and its argument string."""

    name: str
    args: str


@dataclass(frozen=True)
class Modelfile:
    """A parsed Modelfile: its commands in file order.

    ``lines[i]`` is the line where ``commands[i]`` starts (0 when built by hand).
    ``trivia[i]`` holds the comment lines (``"# ..."``) and blank lines (``""``)
    found before ``commands[i]``; ``trivia[len(commands)]`` those after the last one.
    Only ``commands`` takes part in equality.
    """

    commands: tuple[Command, ...]
    lines: tuple[int, ...] = field(default=(), compare=False)
    trivia: tuple[tuple[str, ...], ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "commands", tuple(Command(*c) for c in self.commands))

    def parameters(self) -> list[tuple[str, str]]:
        """The ``PARAMETER`` lines as ``(name, value)`` pairs, in file order."""
        return [(c.name, c.args) for c in self.commands if c.name not in _INSTRUCTION_NAMES]

    def line_of(self, index: int) -> int | None:
        return self.lines[index] if index < len(self.lines) and self.lines[index] else None


# --------------------------------------------------------------------------- decoding


def _decode(data: str | bytes) -> str:
    if isinstance(data, str):
        return data[1:] if data.startswith("\ufeff") else data
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", errors="replace")
    if data.startswith(b"\xff\xfe"):
        return data[2:].decode("utf-16-le", errors="replace")
    if data.startswith(b"\xfe\xff"):
        return data[2:].decode("utf-16-be", errors="replace")
    return data.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- parsing

_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)
_ASCII_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_PARAM_CHARS = _ASCII_LETTERS | frozenset("0123456789_")
_GO_SPACE = " \t\n\r\v\f\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008" \
            "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


def _is_space(c: str) -> bool:
    return c == " " or c == "\t"


def _is_newline(c: str) -> bool:
    return c == "\n" or c == "\r"


def _unquote(s: str) -> tuple[str, bool]:
    """Strip one level of ``\"\"\"`` or ``"`` quotes; False when the quote is still open."""
    if s.startswith('"""'):
        if len(s) >= 6 and s.endswith('"""'):
            return s[3:-3], True
        return "", False
    if s.startswith('"'):
        if len(s) >= 2 and s.endswith('"'):
            return s[1:-1], True
        return "", False
    return s, True


def _parser_error(detail: str, ollama_line: int, line: int) -> ModelfileError:
    return ModelfileError(f"(line {ollama_line}): {detail}", detail=detail, line=line, kind="parser_error")


def _eof_error(buffer: str | None, line: int) -> ModelfileError:
    text = ERR_EOF if buffer is None else f"{ERR_EOF}: {buffer}"
    return ModelfileError(text, line=line, kind="unexpected_eof")


def parse(data: str | bytes) -> Modelfile:
    """Parse a Modelfile exactly as Ollama's ``parser.ParseFile`` does.

    Raises ``ModelfileError`` with Ollama's message on any input Ollama rejects.
    """
    text = _decode(data)
    commands: list[Command] = []
    starts: list[int] = []
    trivia: list[tuple[str, ...]] = []
    pending: list[str] = []  # comments and blank lines waiting for the next command

    state = _NIL
    buf: list[str] = []
    name = ""
    role = ""
    ollama_line = 1  # Ollama's counter: +1 for every \r and every \n, before the rune
    line = 1  # the physical line of the current rune (CRLF counts once)
    start = 1  # line of the instruction being read
    comment: list[str] = []

    for i, c in enumerate(text):
        prev = text[i - 1] if i else ""
        if prev == "\n" or (prev == "\r" and c != "\n"):
            line += 1
        if _is_newline(c):
            ollama_line += 1

        # What the rune means in the current state: the next state, and the rune
        # to buffer ("" = nothing). Mirrors Ollama's parseRuneForState.
        keep = c
        if state == _NIL:
            if c == "#":
                nxt, keep = _COMMENT, ""
                comment = ["#"]
            elif _is_space(c) or _is_newline(c):
                nxt, keep = _NIL, ""
                if c == "\r" or (c == "\n" and prev != "\r"):
                    pending.append("")  # a blank (or blanks-only) line
            else:
                nxt = _NAME
                start = line
        elif state == _NAME:
            if c in _ASCII_LETTERS:
                nxt = _NAME
            elif _is_space(c):
                nxt, keep = _VALUE, ""
            else:
                raise _parser_error(ERR_INVALID_COMMAND, ollama_line, start)
        elif state == _VALUE:
            nxt = _NIL if (_is_space(c) or _is_newline(c)) else _VALUE
        elif state in (_PARAMETER, _MESSAGE):
            allowed = _PARAM_CHARS if state == _PARAMETER else _ASCII_LETTERS
            if c in allowed:
                nxt = state
            elif _is_space(c):
                nxt, keep = _VALUE, ""
            else:
                raise _eof_error("".join(buf), start)
        else:  # _COMMENT
            if _is_newline(c):
                nxt, keep = _NIL, ""
                pending.append("".join(comment).rstrip())
            else:
                nxt, keep = _COMMENT, ""
                if c.isprintable() or c == "\t":
                    comment.append(c)

        if nxt != state:
            if state == _NAME:
                word = "".join(buf)
                lowered = word.lower()
                if lowered not in KEYWORDS:
                    raise _parser_error(ERR_INVALID_COMMAND, ollama_line, start)
                if lowered == "from":
                    name = "model"
                elif lowered == "parameter":
                    nxt = _PARAMETER
                elif lowered == "message":
                    nxt = _MESSAGE
                    name = lowered
                else:
                    name = lowered
            elif state == _PARAMETER:
                name = "".join(buf)
            elif state == _MESSAGE:
                role = "".join(buf)
                if role not in MESSAGE_ROLES:
                    raise _parser_error(ERR_INVALID_ROLE, ollama_line, start)
            elif state == _VALUE:
                value, closed = _unquote("".join(buf).strip(_GO_SPACE))
                if not closed or _is_space(c):
                    buf.append(c)  # spaces, tabs and line breaks inside a value are kept
                    continue
                if role:
                    value = f"{role}: {value}"
                    role = ""
                commands.append(Command(name, value))
                starts.append(start)
                trivia.append(tuple(pending))
                pending = []
            buf = []
            state = nxt

        if keep and keep.isprintable():
            buf.append(keep)

    # end of input
    if state == _COMMENT:
        pending.append("".join(comment).rstrip())
    elif state == _VALUE:
        value, closed = _unquote("".join(buf).strip(_GO_SPACE))
        if not closed:
            raise _eof_error(None, start)
        if role:
            value = f"{role}: {value}"
        commands.append(Command(name, value))
        starts.append(start)
        trivia.append(tuple(pending))
        pending = []
    elif state != _NIL:
        raise _eof_error(None, start)

    trivia.append(tuple(pending))
    if not any(cmd.name == "model" for cmd in commands):
        raise ModelfileError(ERR_MISSING_FROM, kind="missing_from")
    return Modelfile(tuple(commands), tuple(starts), tuple(trivia))


# --------------------------------------------------------------------------- rendering


def _ollama_quote(s: str) -> str:
    """Ollama's ``quote``: only values with a newline or edge spaces are quoted."""
    if "\n" in s or s.startswith(" ") or s.endswith(" "):
        return f'"""{s}"""' if '"' in s else f'"{s}"'
    return s


def _safe_quote(s: str) -> str:
    """A quoting that always reads back as ``s`` (used when formatting files).

    Raises ModelfileError for the few values no Modelfile syntax can hold
    (a value containing ``\"\"\"`` that also needs quoting).
    """
    needs = (
        s == ""
        or "\n" in s
        or "\r" in s
        or s[0] in ' \t"'
        or s[-1] in " \t"
    )
    if not needs:
        return s
    if '"' not in s:
        return f'"{s}"'
    if '"""' not in s:
        return f'"""{s}"""'
    raise ModelfileError(f"value cannot be written as a Modelfile string: {s!r}")


def _render_command(cmd: Command, quote: Callable[[str], str], quote_from: bool) -> str:
    name, args = cmd
    if name == "model":
        return f"FROM {quote(args) if quote_from else args}"
    if name in _PLAIN_KEYWORDS:
        return f"{name.upper()} {quote(args)}"
    if name == "message":
        role, _, content = args.partition(": ")
        return f"MESSAGE {role} {quote(content)}"
    return f"PARAMETER {name} {quote(args)}"


def format(modelfile: Modelfile, *, keep_comments: bool = False) -> str:
    """Render ``modelfile`` back to text.

    By default exactly as Ollama's ``Modelfile.String`` (one line per command,
    ``FROM`` never quoted, other values quoted only when they hold a newline or
    start/end with a space), which is what ``/api/show`` returns.

    With ``keep_comments=True`` (``stack modelfile fmt``): the comments and blank
    lines of the source are kept (runs of blank lines collapse to one), values are
    quoted whenever needed for the file to read back to the same commands, and a
    ModelfileError is raised if that is impossible.
    """
    if not keep_comments:
        return "".join(_render_command(c, _ollama_quote, False) + "\n" for c in modelfile.commands)

    out: list[str] = []

    def emit_trivia(items: tuple[str, ...]) -> None:
        for item in items:
            if item == "":
                if out and out[-1] != "":
                    out.append("")
            else:
                out.append(item)

    trivia = modelfile.trivia
    for i, cmd in enumerate(modelfile.commands):
        if i < len(trivia):
            emit_trivia(trivia[i])
        out.append(_render_command(cmd, _safe_quote, True))
    if len(trivia) > len(modelfile.commands):
        emit_trivia(trivia[len(modelfile.commands)])
    while out and out[-1] == "":
        out.pop()
    text = "".join(line + "\n" for line in out)
    if parse(text) != modelfile:  # guard: formatting must never change meaning
        raise ModelfileError("formatting would change the meaning of this Modelfile")
    return text


# --------------------------------------------------------------------------- create request

_SEMVER_RE = re.compile(
    r"v(0|[1-9]\d*)(\.(0|[1-9]\d*))?(\.(0|[1-9]\d*))?"
    r"(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?"
)


def _valid_semver(v: str) -> bool:
    """golang.org/x/mod/semver.IsValid: ``vMAJOR[.MINOR[.PATCH]]`` with optional
    prerelease/build, where the shorthand forms may not carry them."""
    m = _SEMVER_RE.fullmatch(v)
    if not m:
        return False
    if m.group(5) is None and (m.group(6) or m.group(8)):
        return False
    if m.group(6):  # numeric prerelease identifiers must not have leading zeros
        for ident in m.group(6)[1:].split("."):
            if ident.isdigit() and len(ident) > 1 and ident[0] == "0":
                return False
    return True


def expand_path(value: str, base_dir: str) -> str:
    """Where a FROM/ADAPTER/DRAFT value points, as Ollama's client expands it.

    Absolute (or ``/``/``\\`` prefixed) paths stay; ``~`` and ``~/x`` use the
    current user's home, ``~user/x`` that user's home; anything else is relative
    to ``base_dir`` (the Modelfile's directory). The result is absolute and
    normalised. No file is read.
    """
    if os.path.isabs(value) or value.startswith(("/", "\\")):
        path = value
    elif value.startswith("~"):
        path = os.path.expanduser(value)
        if path.startswith("~"):
            user = value[1:].split("/", 1)[0]
            raise ModelfileError(f"failed to find user '{user}'")
    else:
        path = os.path.join(base_dir, value)
    return os.path.abspath(path)


@dataclass(frozen=True)
class LocalPath:
    """A FROM/ADAPTER/DRAFT value that names a local file or directory."""

    written: str  # as in the Modelfile
    path: str  # absolute, see expand_path
    line: int | None = None


@dataclass
class CreateRequest:
    """What a Modelfile asks ``/api/create`` for, before any file is uploaded.

    ``model_files``/``adapter_files``/``draft_files`` are the local paths whose
    contents the caller must upload (a directory stands for the model files in
    it); ``body()`` then builds the JSON request from the resulting digests.
    ``model_blobs``/``adapter_blobs`` hold the digests of ``FROM @sha256:<hex>``
    / ``ADAPTER @sha256:<hex>`` lines: blobs already on the server, which is how
    Ollama's old (<= v0.5.4) client rewrote local files in the ``modelfile`` it sent.
    """

    from_: str | None = None
    model_files: list[LocalPath] = field(default_factory=list)
    adapter_files: list[LocalPath] = field(default_factory=list)
    draft_files: list[LocalPath] = field(default_factory=list)
    model_blobs: list[str] = field(default_factory=list)  # FROM @sha256:<hex> (digests)
    adapter_blobs: list[str] = field(default_factory=list)  # ADAPTER @sha256:<hex>
    template: str | None = None
    system: str | None = None
    renderer: str | None = None
    parser: str | None = None
    requires: str | None = None
    license: list[str] = field(default_factory=list)
    parameters: dict = field(default_factory=dict)
    messages: list[dict] = field(default_factory=list)
    warnings: list[tuple[int | None, str]] = field(default_factory=list)  # (line, text)

    def body(
        self,
        model: str | None = None,
        files: dict[str, str] | None = None,
        adapters: dict[str, str] | None = None,
        draft_files: dict[str, str] | None = None,
    ) -> dict:
        """The ``/api/create`` JSON body (keys as Ollama's ``api.CreateRequest``).

        ``files``/``adapters``/``draft_files`` map a file name to its
        ``sha256:<hex>`` digest once uploaded. Empty fields are left out, as
        Ollama's ``omitempty`` does (so an empty ``SYSTEM ""`` is not sent).
        """
        out: dict = {}
        if model is not None:
            out["model"] = model
        if self.from_:
            out["from"] = self.from_
        for key, value in (("files", files), ("adapters", adapters), ("draft_files", draft_files)):
            if value:
                out[key] = dict(value)
        for key in ("template", "system", "renderer", "parser", "requires"):
            value = getattr(self, key)
            if value:
                out[key] = value
        if self.license:
            out["license"] = list(self.license)
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        if self.messages:
            out["messages"] = [dict(m) for m in self.messages]
        return out


def to_create_request(
    modelfile: Modelfile,
    base_dir: str = ".",
    exists: Callable[[str], bool] = os.path.exists,
) -> CreateRequest:
    """Turn a parsed Modelfile into a create request, as Ollama's ``Modelfile.CreateRequest``.

    A ``FROM`` value is a local file when ``exists(expand_path(value, base_dir))``,
    otherwise a model name (and then it must be a valid one: Ollama would send it
    and get ``invalid model name`` back; Corral says which line). ``ADAPTER`` and
    ``DRAFT`` always name local paths that must exist. ``exists`` is the only
    access to the file system; pass ``lambda p: False`` to classify purely.

    Parameters are typed by ``toolchain.options.parse_parameter`` (errors carry
    Ollama's text: ``unknown parameter 'x'``, ``invalid float value [x]``...);
    deprecated ones are dropped with a warning, as Ollama does.
    Raises the first ModelfileError (with ``line`` set).
    """
    req = CreateRequest()
    for i in range(len(modelfile.commands)):
        _apply(req, modelfile, i, base_dir, exists)
    return req


class CheckResult(NamedTuple):
    errors: list[ModelfileError]  # in file order; empty = the file is fine
    warnings: list[tuple[int | None, str]]  # (line, text), e.g. deprecated parameters


def check(
    modelfile: Modelfile,
    base_dir: str = ".",
    exists: Callable[[str], bool] = os.path.exists,
) -> CheckResult:
    """Every problem ``to_create_request`` would stop at (not just the first), and its warnings."""
    req = CreateRequest()
    errors: list[ModelfileError] = []
    for i in range(len(modelfile.commands)):
        try:
            _apply(req, modelfile, i, base_dir, exists)
        except ModelfileError as exc:
            errors.append(exc)
    return CheckResult(errors, req.warnings)


def _apply(req: CreateRequest, modelfile: Modelfile, i: int, base_dir: str,
           exists: Callable[[str], bool]) -> None:
    from toolchain.options import DEPRECATED_PARAMETERS, parse_parameter

    name, args = modelfile.commands[i]
    line = modelfile.line_of(i)
    try:
        if name in ("model", "adapter") and _is_blob_ref(args):
            (req.model_blobs if name == "model" else req.adapter_blobs).append(args[1:].lower())
        elif name == "model":
            path = expand_path(args, base_dir)
            if exists(path):
                _reject_same_path("DRAFT", path, req.draft_files)
                req.model_files.append(LocalPath(args, path, line))
            else:
                if not parse_name(args).is_valid():
                    raise ModelfileError(f"FROM {args}: no such file, and not a valid model name")
                req.from_ = args
        elif name in ("adapter", "draft"):
            path = expand_path(args, base_dir)
            if not exists(path):
                raise ModelfileError(f"{name.upper()} {args}: no such file or directory")
            if name == "draft":
                _reject_same_path("DRAFT", path, req.model_files)
                req.draft_files.append(LocalPath(args, path, line))
            else:
                req.adapter_files.append(LocalPath(args, path, line))
        elif name in ("template", "system", "renderer", "parser"):
            setattr(req, name, args)
        elif name == "license":
            req.license.append(args)
        elif name == "requires":
            version = args if args.startswith("v") else "v" + args
            if not _valid_semver(version):
                raise ModelfileError("requires must be a valid semver (e.g. 0.14.0)")
            req.requires = version[1:]
        elif name == "message":
            role, _, content = args.partition(": ")
            req.messages.append({"role": role, "content": content})
        elif name in DEPRECATED_PARAMETERS:
            req.warnings.append((line, f"parameter {name} is deprecated"))
        else:
            value = parse_parameter(name, args)
            if name == "stop":
                req.parameters.setdefault("stop", []).extend(value)
            else:
                req.parameters[name] = value
    except (ModelfileError, ValueError) as exc:
        raise _at_line(exc, line) from exc


def _is_blob_ref(value: str) -> bool:
    return value.startswith("@") and is_digest(value[1:])


def _reject_same_path(keyword: str, path: str, others: list[LocalPath]) -> None:
    for other in others:
        if os.path.normpath(other.path) == os.path.normpath(path):
            raise ModelfileError(f"{keyword} must not reference the same local path as FROM: {path}")


def _at_line(exc: Exception, line: int | None) -> ModelfileError:
    if isinstance(exc, ModelfileError) and exc.line is not None:
        return exc
    message = str(exc)
    return ModelfileError(message, line=line, kind="invalid_value")
