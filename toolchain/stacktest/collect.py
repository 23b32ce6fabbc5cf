"""Gathering a stack's tests: inline (`models.<name>.tests:`) and from the test files its
top-level `tests:` names (paths or globs relative to the stack file, inside the repository).

A test file maps model names to lists of tests:

    support-bot:
      - name: vpn
        prompt: How do I reset my VPN token?
        expect: {contains: portal}

Every problem (bad YAML, a wrong key or type, an invalid regex or schema, a test for a model
the stack does not declare, a duplicate test name, a file outside the repository) is a
`StackError` naming the file, the line and the key, raised before anything runs.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from pydantic import TypeAdapter, ValidationError
from ruamel.yaml.comments import CommentedMap

from toolchain.stack.load import (
    LoadedStack,
    StackError,
    _located,
    _plain,
    dotted,
    interpolate,
    line_of,
    parse_yaml,
)
from toolchain.stack.state import display_name, key_of
from toolchain.stacktest.spec import TestCase

TestFileModel = dict[str, list[TestCase]]
_FILE = TypeAdapter(TestFileModel)


@dataclass(frozen=True)
class Test:
    """One test of one model of the stack."""

    __test__ = False

    model: str  # the model's display name (support-bot:latest)
    key: str  # its case-folded identity (toolchain.stack.state.key_of)
    case: TestCase
    origin: str  # "file:line" of the test

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def id(self) -> str:
        return f"{self.model}::{self.case.name}"


def collect(loaded: LoadedStack, *, env: Mapping[str, str] | None = None) -> list[Test]:
    """Every test of the stack, in file order (inline tests first)."""
    declared = {key_of(name): name for name in loaded.stack.models}
    out: list[Test] = []
    seen: dict[tuple[str, str], str] = {}

    def add(model_name: str, case: TestCase, origin: str, error: Any) -> None:
        key = key_of(model_name)
        if key not in declared:
            raise error(f"the stack declares no model {model_name!r}; tests name a model under models:")
        ident = (key, case.name)
        if ident in seen:
            raise error(f"duplicate test name {case.name!r} for model {model_name!r} (first at {seen[ident]})")
        seen[ident] = origin
        out.append(Test(display_name(declared[key]), key, case, origin))

    for name, model in loaded.stack.models.items():
        for i, case in enumerate(model.tests):
            err = loaded.error("", "models", name, "tests", i)
            origin = f"{err.file}:{err.line}"
            add(name, case, origin, lambda m, loc=("models", name, "tests", i, "name"): loaded.error(m, *loc))

    for rel in test_files(loaded):
        display = loaded.source.display(rel)
        doc = parse_yaml(loaded.source.read_text(rel), display)
        if doc is None:
            continue
        if not isinstance(doc, CommentedMap):
            raise StackError("a test file maps model names to lists of tests", display, 1)

        def missing(var: str, loc: tuple, display: str = display, doc: Any = doc) -> str:
            raise StackError(f"environment variable {var} is not set", display, line_of(doc, loc), dotted(loc))

        data = interpolate(_plain(doc), os.environ if env is None else env, missing)
        try:
            parsed = _FILE.validate_python(data)
        except ValidationError as exc:
            raise _located(exc, doc, display, TestFileModel) from None
        for model_name, cases in parsed.items():
            for i, case in enumerate(cases):
                line = line_of(doc, (model_name, i))
                origin = f"{display}:{line}"

                def error(m: str, loc: tuple = (model_name, i), display: str = display, doc: Any = doc) -> StackError:
                    where = loc if m.startswith("duplicate") else loc[:1]
                    return StackError(m, display, line_of(doc, where), dotted(where))

                add(model_name, case, origin, error)
    return out


def test_files(loaded: LoadedStack) -> list[str]:
    """Repository paths of the files the stack's `tests:` names (globs expanded, sorted)."""
    root = loaded.source.local_path("")
    found: list[str] = []
    for i, pattern in enumerate(loaded.stack.tests):
        rel = loaded.resolve(pattern, "tests", i)
        if not any(c in rel for c in "*?["):
            if not loaded.source.is_file(rel):
                raise loaded.error(f"{pattern}: no such file", "tests", i)
            matches = [rel]
        else:
            if root is None:
                raise loaded.error(f"{pattern}: globs need a working tree", "tests", i)
            matches = sorted(
                p.relative_to(root).as_posix() for p in Path(root).glob(rel) if p.is_file() and fnmatch.fnmatch(p.relative_to(root).as_posix(), rel)
            )
            if not matches:
                raise loaded.error(f"{pattern}: matches no file", "tests", i)
        for m in matches:
            if root is not None:
                real = Path(os.path.realpath(Path(root) / m))
                if not real.is_relative_to(Path(os.path.realpath(root))):
                    raise loaded.error(f"{pattern}: {m} is outside the repository (a link)", "tests", i)
            if m not in found:
                found.append(m)
    return found


def select(tests: Sequence[Test], models: Sequence[str] = (), pattern: str | None = None) -> list[Test]:
    """The tests of `models` (case-insensitive names) whose `model::name` matches `pattern`.

    The pattern is a glob when it holds `*?[`, else a substring; case is ignored.
    """
    keys = {key_of(m) for m in models}
    out = [t for t in tests if not keys or t.key in keys]
    if not pattern:
        return out
    p = pattern.casefold()
    if any(c in p for c in "*?["):
        return [t for t in out if fnmatch.fnmatchcase(t.id.casefold(), p) or fnmatch.fnmatchcase(t.name.casefold(), p)]
    return [t for t in out if p in t.id.casefold()]
