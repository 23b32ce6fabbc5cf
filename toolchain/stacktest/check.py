"""Checking an answer against a test's expectations (pure: values in, reasons out).

`check(answer, expect)` returns one human-readable reason per unmet expectation, in a fixed
order (contains, not_contains, regex, json_schema, max_tokens, max_seconds, equals); an empty
list means the test passes.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Optional

from toolchain.stacktest.spec import Expect


@dataclass(frozen=True)
class Answer:
    """What a model answered, and what it cost."""

    text: str
    tokens: Optional[int] = None  # generated tokens (eval_count)
    seconds: Optional[float] = None  # time to answer, model loading not counted
    done_reason: Optional[str] = None


def check(answer: Answer, expect: Expect) -> list[str]:
    reasons: list[str] = []
    text = answer.text
    fold = (lambda s: s) if expect.case_sensitive else str.casefold
    for needle in expect.contains:
        if fold(needle) not in fold(text):
            reasons.append(f"does not contain {needle!r}")
    for needle in expect.not_contains:
        if fold(needle) in fold(text):
            reasons.append(f"contains {needle!r}")
    for pattern in expect.regex:
        if re.search(pattern, text) is None:
            reasons.append(f"does not match /{pattern}/")
    if expect.json_schema is not None:
        reason = _json_reason(text, expect.json_schema)
        if reason:
            reasons.append(reason)
    if expect.max_tokens is not None:
        if answer.tokens is None:
            reasons.append("the server did not report a token count")
        elif answer.tokens > expect.max_tokens:
            reasons.append(f"{answer.tokens} tokens > max_tokens {expect.max_tokens}")
    if expect.max_seconds is not None:
        if answer.seconds is None:
            reasons.append("the server did not report a duration")
        elif answer.seconds > expect.max_seconds:
            reasons.append(f"{answer.seconds:.2f}s > max_seconds {expect.max_seconds:g}")
    if expect.equals is not None and text != expect.equals:
        reasons.append(f"differs from equals at character {_first_difference(text, expect.equals)}")
    return reasons


def _json_reason(text: str, schema: dict) -> Optional[str]:
    import jsonschema

    try:
        value = json.loads(text)
    except ValueError as exc:
        return f"not JSON: {exc}"
    validator = jsonschema.validators.validator_for(schema)(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"JSON does not match the schema{f' at {where}' if where else ''}: {error.message}"


def _first_difference(a: str, b: str) -> int:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))
