"""Ollama's model options: names, types, defaults, and the two ways they are checked.

* Modelfile ``PARAMETER name value`` lines are strings typed at create time
  (Ollama's ``api.FormatParams``): ``parse_parameter`` / ``parse_parameters``.
  An unknown name is an error (``unknown parameter 'foo'``); a value of the
  wrong type too (``invalid int value [1.5]``, ``invalid float value [abc]``,
  ``invalid bool value [maybe]``, Go's ``%s`` of a one-element slice).
  ``stop`` accumulates into a list. Names are case-sensitive.
* Request ``options`` JSON (Ollama's ``Options.FromMap``): ``validate_options``.
  A wrong type is an error whose text is Ollama's (``option "num_ctx" must be of
  type integer``); unknown keys are ignored (Ollama only logs them) and reported
  back; ``null`` values are ignored; a number given for an integer option is
  truncated toward zero, as Go's ``int64(float64)`` does.

The table is Ollama's ``api.Options`` (with its embedded ``Runner``) at HEAD.
Defaults are Ollama's ``DefaultOptions``; ``None`` means "unset: decided at load
time" (``num_ctx`` follows ``OLLAMA_CONTEXT_LENGTH``/memory, ``main_gpu`` and
``use_mmap`` are left to the runtime). Names Ollama removed but still tolerates in
Modelfiles (``mirostat``, ``penalize_newline``, ...) are in
``DEPRECATED_PARAMETERS``: dropped with a warning at create, ignored in requests.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Iterable, Literal, NamedTuple

from toolchain.errors import CorralError

__all__ = [
    "DEPRECATED_PARAMETERS",
    "OPTIONS",
    "CheckedOptions",
    "Option",
    "OptionError",
    "defaults",
    "parse_parameter",
    "parse_parameters",
    "validate_options",
]

Kind = Literal["int", "float", "bool", "stop"]


@dataclass(frozen=True)
class Option:
    name: str
    kind: Kind
    default: Any  # None: unset, decided when the model loads
    load_time: bool  # a runner option: changing it needs a reload
    help: str


OPTIONS: dict[str, Option] = {
    o.name: o
    for o in (
        # Runner (load-time) options
        Option("num_ctx", "int", None, True, "context window in tokens (default: server setting)"),
        Option("num_batch", "int", 512, True, "prompt processing batch size"),
        Option("num_gpu", "int", -1, True, "layers to offload to GPUs (-1: automatic)"),
        Option("main_gpu", "int", None, True, "GPU for small tensors"),
        Option("use_mmap", "bool", None, True, "memory-map the model file"),
        Option("num_thread", "int", 0, True, "CPU threads (0: automatic)"),
        Option("draft_num_predict", "int", 4, True, "tokens proposed per step by a draft model"),
        # Predict (per-request) options
        Option("num_keep", "int", 4, False, "tokens of the prompt kept when the context shifts"),
        Option("seed", "int", -1, False, "random seed (-1: random)"),
        Option("num_predict", "int", -1, False, "maximum tokens to generate (-1: no limit)"),
        Option("top_k", "int", 40, False, "sample among the k most likely tokens"),
        Option("top_p", "float", 0.9, False, "nucleus sampling threshold"),
        Option("min_p", "float", 0.0, False, "minimum probability relative to the most likely token"),
        Option("typical_p", "float", 1.0, False, "locally typical sampling"),
        Option("repeat_last_n", "int", 64, False, "tokens looked back for repetition penalties"),
        Option("temperature", "float", 0.8, False, "sampling temperature"),
        Option("repeat_penalty", "float", 1.0, False, "penalty for repeated tokens"),
        Option("presence_penalty", "float", 0.0, False, "penalty for tokens already present"),
        Option("frequency_penalty", "float", 0.0, False, "penalty by token frequency"),
        Option("stop", "stop", None, False, "stop sequences"),
    )
}

#: Parameters Ollama dropped but still accepts in a Modelfile (with a warning).
DEPRECATED_PARAMETERS = frozenset({
    "penalize_newline", "low_vram", "f16_kv", "logits_all", "vocab_only",
    "use_mlock", "mirostat", "mirostat_tau", "mirostat_eta",
})


class OptionError(CorralError, ValueError):
    """An option or parameter Ollama would reject; ``str`` is Ollama's message."""

    def __init__(self, message: str, name: str) -> None:
        super().__init__(message)
        self.message = message
        self.name = name


def defaults() -> dict[str, Any]:
    """Ollama's default for every option that has one (unset ones left out)."""
    return {o.name: o.default for o in OPTIONS.values() if o.default is not None}


# --------------------------------------------------------------------------- PARAMETER strings

_INT_RE = re.compile(r"[+-]?[0-9]+")
_DECIMAL_RE = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_RE = re.compile(r"([+-]?)0[xX]((?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)[pP][+-]?[0-9]+)")
_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})
_INT64 = (-(2**63), 2**63 - 1)


def _go_float32(text: str) -> float | None:
    """``strconv.ParseFloat(text, 32)`` for finite values; None when Go would fail.

    Infinities and NaN (which Go parses but no JSON request can carry) are
    refused too. The value keeps its decimal reading (``0.05`` stays ``0.05``),
    which is what Go's JSON encoder prints for the float32.
    """
    if _DECIMAL_RE.fullmatch(text):
        value = float(text)
    else:
        m = _HEX_RE.fullmatch(text)
        if not m:
            return None
        value = float.fromhex(m.group(1) + "0x" + m.group(2))
    try:
        struct.pack("<f", value)  # overflow past float32 range, as bitSize 32 reports
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def parse_parameter(name: str, value: str) -> Any:
    """Type one Modelfile ``PARAMETER`` as Ollama's ``FormatParams`` does.

    Returns an int, a float, a bool, or for ``stop`` a one-element list.
    Raises OptionError with Ollama's message. Deprecated names are not known
    here (the caller drops them first, see ``parse_parameters``).
    """
    opt = OPTIONS.get(name)
    if opt is None:
        raise OptionError(f"unknown parameter '{name}'", name)
    if opt.kind == "stop":
        return [value]
    if opt.kind == "int":
        if _INT_RE.fullmatch(value) and _INT64[0] <= int(value) <= _INT64[1]:
            return int(value)
        raise OptionError(f"invalid int value [{value}]", name)
    if opt.kind == "float":
        parsed = _go_float32(value)
        if parsed is None:
            raise OptionError(f"invalid float value [{value}]", name)
        return parsed
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise OptionError(f"invalid bool value [{value}]", name)


def parse_parameters(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Type a Modelfile's ``PARAMETER`` lines (``(name, value)`` in file order).

    Deprecated names are dropped (see DEPRECATED_PARAMETERS); ``stop`` values
    accumulate in order; for any other repeated name the last one wins.
    """
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in DEPRECATED_PARAMETERS:
            continue
        typed = parse_parameter(name, value)
        if name == "stop":
            out.setdefault("stop", []).extend(typed)
        else:
            out[name] = typed
    return out


# --------------------------------------------------------------------------- request options


class CheckedOptions(NamedTuple):
    values: dict[str, Any]  # known options with typed values (nulls left out)
    ignored: list[str]  # unknown keys, ignored as Ollama does


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def validate_options(options: dict[str, Any] | None) -> CheckedOptions:
    """Check a request's ``options`` object the way Ollama's ``Options.FromMap`` does.

    Raises OptionError (a ValueError) with Ollama's text, e.g.
    ``option "num_ctx" must be of type integer``. Ollama answers these with a
    500; a server should answer 400.
    """
    values: dict[str, Any] = {}
    ignored: list[str] = []
    for key, value in (options or {}).items():
        opt = OPTIONS.get(key)
        if opt is None:
            ignored.append(key)
            continue
        if value is None:
            continue
        q = _go_quote(key)
        is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if opt.kind == "int":
            if not is_number or not math.isfinite(value):
                raise OptionError(f"option {q} must be of type integer", key)
            values[key] = int(value)
        elif opt.kind == "float":
            if not is_number or not math.isfinite(value):
                raise OptionError(f"option {q} must be of type float32", key)
            values[key] = float(value)
        elif opt.kind == "bool":
            if not isinstance(value, bool):
                raise OptionError(f"option {q} must be of type boolean", key)
            values[key] = value
        else:  # stop
            if not isinstance(value, list):
                raise OptionError(f"option {q} must be of type array", key)
            if not all(isinstance(item, str) for item in value):
                raise OptionError(f"option {q} must be of an array of strings", key)
            values[key] = list(value)
    return CheckedOptions(values, ignored)
