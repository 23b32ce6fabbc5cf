"""Loading `stack.yaml`: ruamel.yaml round-trip parsing, `${VAR}` interpolation, validation.

Every error names the file, the line and the key (`stacks/team/stack.yaml:14 models.bot.from: ...`).
Files are read through a `Source` so the same loader reads the working tree (`WorkTree`) or a
git commit (`toolchain.stack.gitdiff.GitTree`). Paths inside a source are repository-relative
POSIX strings; a Modelfile path that leaves the repository is an error.
"""

from __future__ import annotations

import codecs
import difflib
import os
import posixpath
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.constructor import DuplicateKeyError
from ruamel.yaml.error import MarkedYAMLError

from toolchain.errors import CorralError
from toolchain.stack.schema import Stack

_VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\})")


class StackError(CorralError):
    """A problem in a stack file or a file it names, located as `file:line key: message`."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None, key: str = "") -> None:
        self.message, self.file, self.line, self.key = message, file, line, key
        where = ""
        if file:
            where = f"{file}:{line}" if line else file
            where += f" {key}:" if key else ":"
        super().__init__(f"{where} {message}".strip())


class Source(Protocol):
    """Where stack files and Modelfiles are read from."""

    def read_text(self, path: str) -> str: ...

    def is_file(self, path: str) -> bool: ...

    def display(self, path: str) -> str: ...

    def local_path(self, path: str) -> Path | None:
        """The file on this machine for a repository path (None when it only exists in git)."""


class WorkTree:
    """The repository checked out on disk; `root` is its top directory."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    @classmethod
    def for_file(cls, stack_file: Path) -> tuple["WorkTree", str]:
        """The repository holding `stack_file` (the nearest folder with .git, else the file's folder)."""
        path = stack_file.resolve()
        root = next((p for p in path.parents if (p / ".git").exists()), path.parent)
        return cls(root), path.relative_to(root).as_posix()

    def local_path(self, path: str) -> Path:
        return self.root / path

    def read_text(self, path: str) -> str:
        try:
            return decode((self.root / path).read_bytes(), self.display(path))
        except FileNotFoundError:
            raise StackError("no such file", self.display(path)) from None

    def is_file(self, path: str) -> bool:
        return (self.root / path).is_file()

    def display(self, path: str) -> str:
        full = self.root / path
        try:
            return os.path.relpath(full)
        except ValueError:  # another drive (Windows)
            return str(full)


def decode(data: bytes, display: str) -> str:
    """Text of a stack file or Modelfile: UTF-8 (BOM optional), or UTF-16 with a BOM as Ollama accepts."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise StackError("not a UTF-8 (or UTF-16 with BOM) text file", display) from None


@dataclass
class LoadedStack:
    """A validated stack and what is needed to point back into its file."""

    stack: Stack
    source: Any  # a Source
    path: str  # repository-relative path of the stack file
    doc: Any = field(repr=False, default=None)  # the ruamel document, for line numbers

    @property
    def display(self) -> str:
        return self.source.display(self.path)

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.path)

    def error(self, message: str, *loc: str | int) -> StackError:
        """A StackError located at the key `loc` (e.g. "models", "bot", "from")."""
        return StackError(message, self.display, line_of(self.doc, loc), dotted(loc))

    def resolve(self, relpath: str, *loc: str | int, base: str | None = None) -> str:
        """A path relative to the stack file's folder (or `base`), confined to the repository."""
        return confine(relpath, self.folder if base is None else base, lambda m: self.error(m, *loc))


def confine(relpath: str, folder: str, error: Any) -> str:
    """Join `relpath` onto the repository folder `folder`; refuse anything outside the repository."""
    if relpath.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", relpath):
        raise error(f"{relpath}: must be a path relative to the stack file, inside the repository")
    joined = posixpath.normpath(posixpath.join(folder, relpath.replace("\\", "/")))
    if joined == ".." or joined.startswith("../"):
        raise error(f"{relpath}: is outside the repository")
    return joined


def dotted(loc: typing.Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_of(doc: Any, loc: typing.Sequence[str | int]) -> int | None:
    """1-based line of the deepest existing key along `loc` in a ruamel document."""
    line = 1 if doc is not None else None
    node = doc
    for part in loc:
        if isinstance(node, CommentedMap) and part in node:
            line = node.lc.key(part)[0] + 1
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line = node.lc.item(part)[0] + 1
            node = node[part]
        else:
            break
    return line


def interpolate(value: Any, env: Mapping[str, str], on_missing: Any, loc: tuple = ()) -> Any:
    """Plain data with `${VAR}` / `${VAR:-default}` replaced in every string (`$$` is a `$`).

    `on_missing(name, loc)` returns the text for an unset variable or raises.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, env, on_missing, loc + (k,)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, on_missing, loc + (i,)) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        name, default = match.group(2), match.group(3)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        return on_missing(name, loc)

    return _VAR.sub(sub, value)


def yaml_rt() -> YAML:
    """The round-trip YAML reader/writer: comments, key order and quoting survive a rewrite."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096
    return yaml


def parse_yaml(text: str, display: str) -> Any:
    """A round-trip ruamel document (comments kept), or a StackError at the offending line."""
    yaml = yaml_rt()
    try:
        return yaml.load(text)
    except DuplicateKeyError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        key = re.search(r'found duplicate key "([^"]*)"', str(exc))
        raise StackError(f"duplicate key {key.group(1)!r}" if key else "duplicate key", display, line) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise StackError(f"invalid YAML: {exc.problem or exc.context}", display, line) from None


def load_text(
    text: str,
    source: Any,
    path: str,
    *,
    env: Mapping[str, str] | None = None,
    strict_env: bool | typing.Callable[[tuple], bool] = True,
) -> LoadedStack:
    """Validate stack text read from `source` at repository path `path`.

    With `strict_env=False` an unset variable stays as the literal `${NAME}` (offline review);
    a predicate on the value's location (`("targets", "gpu-1", "token")`) says where an unset
    variable is an error (True) and where it stays literal.
    """
    display = source.display(path)
    doc = parse_yaml(text, display)
    if doc is None:
        doc = CommentedMap()
    if not isinstance(doc, CommentedMap):
        raise StackError("a stack file is a mapping (keys such as models:, targets:)", display, 1)
    environ = os.environ if env is None else env

    def missing(name: str, loc: tuple) -> str:
        if not (strict_env(loc) if callable(strict_env) else strict_env):
            return "${" + name + "}"
        raise StackError(f"environment variable {name} is not set", display, line_of(doc, loc), dotted(loc))

    data = interpolate(_plain(doc), environ, missing)
    try:
        stack = Stack.model_validate(data)
    except ValidationError as exc:
        raise _located(exc, doc, display) from None
    loaded = LoadedStack(stack, source, path, doc)
    _check_model_keys(loaded)
    return loaded


def load(stack_file: str | Path, *, env: Mapping[str, str] | None = None) -> LoadedStack:
    """Load a stack file from the working tree."""
    path = Path(stack_file)
    if not path.is_file():
        raise StackError(f"stack file {stack_file} not found")
    tree, rel = WorkTree.for_file(path)
    return load_text(tree.read_text(rel), tree, rel, env=env)


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, str) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if node is not None and type(node).__module__.startswith("ruamel"):
        for base in (bool, int, float, str):
            if isinstance(node, base):
                return base(node)
    return node


def _check_model_keys(loaded: LoadedStack) -> None:
    seen: dict[str, str] = {}
    for name in loaded.stack.models:
        folded = name.casefold()
        if folded in seen:
            raise loaded.error(
                f"duplicate model name: {name!r} and {seen[folded]!r} differ only in case (names are case-insensitive)",
                "models",
                name,
            )
        seen[folded] = name


# -- pydantic errors -> file:line key: message --------------------------------------------------


def _located(exc: ValidationError, doc: Any, display: str, root: Any = Stack) -> StackError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = _existing_loc(doc, tuple(first["loc"]))
    message = _message(first, loc, root)
    more = len({tuple(e["loc"][: len(loc)]) for e in errors[1:]} - {loc})
    if more:
        message += f" (and {more} more error{'s' if more > 1 else ''})"
    return StackError(message, display, line_of(doc, loc), dotted(loc))


def _existing_loc(doc: Any, loc: tuple) -> tuple:
    """`loc` cut where pydantic's union branch names start (they are not keys of the file)."""
    node, out = doc, []
    for part in loc:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break
        out.append(part)
    return tuple(out)


def _message(error: dict[str, Any], loc: tuple, root: Any = Stack) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _known_keys(loc[:-1], root)
        key = str(loc[-1])
        hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        text = f"unknown key {key!r}"
        if hint:
            return f"{text}; did you mean {hint[0]!r}?"
        return f"{text}; expected one of: {', '.join(known)}" if known else text
    if kind == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def _known_keys(loc: tuple, root: Any = Stack) -> list[str]:
    """Field names (aliases) of the schema object found at `loc` (from `root`: the stack, or a test file)."""
    node: Any = root
    for part in loc:
        node = _unwrap(node)
        if isinstance(node, type) and issubclass(node, BaseModel):
            fields = {f.alias or n: f for n, f in node.model_fields.items()}
            if part not in fields:
                return []
            node = fields[part].annotation
        elif typing.get_origin(node) is dict:
            node = typing.get_args(node)[1]
        elif typing.get_origin(node) is list and isinstance(part, int):  # an item of a list (stack tests)
            node = typing.get_args(node)[0]
        else:
            return []
    node = _unwrap(node)
    if isinstance(node, type) and issubclass(node, BaseModel):
        return [f.alias or n for n, f in node.model_fields.items()]
    return []


def _unwrap(node: Any) -> Any:
    if typing.get_origin(node) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        models = [a for a in typing.get_args(node) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else node
    return node
