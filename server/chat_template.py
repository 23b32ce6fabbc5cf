"""GGUF `tokenizer.chat_template` (Jinja) rendering, the way Hugging Face transformers and
llama.cpp render it: a sandboxed, immutable environment with `trim_blocks`/`lstrip_blocks`,
loop controls, `raise_exception`, `strftime_now` and a `tojson` that keeps non-ASCII text.

Used when a model has no TEMPLATE layer. Any failure of the template (syntax, a
`raise_exception` call, a sandbox violation, a type error) is a `TemplateError` naming it.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import Any, Optional, Sequence

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from toolchain.template import TemplateError


class _RaisedByTemplate(Exception):
    pass


def _raise_exception(message: str) -> None:
    raise _RaisedByTemplate(message)


def _strftime_now(fmt: str) -> str:
    return dt.datetime.now().strftime(fmt)


def _tojson(value: Any, ensure_ascii: bool = False, indent: Optional[int] = None, separators: Any = None, sort_keys: bool = False) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@functools.lru_cache(maxsize=16)
def compile_chat_template(source: str) -> jinja2.Template:
    """The compiled template (cached by source); raises `TemplateError` on a syntax error."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"chat template: {exc.message}", exc.lineno or 0, 1 if exc.lineno else 0) from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template: {exc}") from None


def _plain(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)
    return dump(exclude_none=True) if dump is not None else value


def render_jinja_chat_template(
    source: str,
    messages: Sequence[Any],
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    tools: Optional[Sequence[Any]] = None,
    **extra: Any,
) -> str:
    """Render `messages` (API-shaped dicts or pydantic models) with a Jinja chat template.
    `tools` is passed as None when empty, as transformers does; `extra` adds template variables
    (e.g. `enable_thinking`)."""
    template = compile_chat_template(source)
    variables = {
        "messages": [_plain(m) for m in messages],
        "tools": [_plain(t) for t in tools] if tools else None,
        "add_generation_prompt": add_generation_prompt,
        "bos_token": bos_token,
        "eos_token": eos_token,
        **extra,
    }
    try:
        return template.render(**variables)
    except _RaisedByTemplate as exc:
        raise TemplateError(f"chat template: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(f"chat template: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, OverflowError, RecursionError) as exc:
        raise TemplateError(f"chat template: {type(exc).__name__}: {exc}") from None
