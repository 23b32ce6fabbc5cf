"""Request and response shapes of the model-management routes (Ollama's `api/types.go`).

Requests are parsed with `parse_body(raw, Model)`: an empty body is Ollama's 400
`missing request body`, malformed JSON or a field of the wrong type a 400 naming the problem (never
a 500), unknown keys are ignored as Go's decoder ignores them.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Optional, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from server.errors import BadRequest

T = TypeVar("T", bound=BaseModel)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)


class CreateRequest(_Request):
    model: str = ""
    name: str = ""  # deprecated alias of model
    stream: Optional[bool] = None
    quantize: str = ""
    quantization: str = ""  # deprecated alias of quantize
    from_: str = Field("", alias="from")
    files: Optional[dict[str, str]] = None
    adapters: Optional[dict[str, str]] = None
    template: str = ""
    system: str = ""
    license: Union[str, list[str], None] = None
    parameters: Optional[dict[str, Any]] = None
    messages: Optional[list[dict[str, Any]]] = None
    renderer: str = ""
    parser: str = ""
    requires: str = ""
    modelfile: str = ""  # legacy shape (Ollama <= 0.5.4)
    path: str = ""  # legacy, never read by this server


class ShowRequest(_Request):
    model: str = ""
    name: str = ""
    system: str = ""
    template: str = ""  # deprecated, ignored
    verbose: bool = False
    options: Optional[dict[str, Any]] = None


class CopyRequest(_Request):
    source: str = ""
    destination: str = ""


class DeleteRequest(_Request):
    model: str = ""
    name: str = ""


class ModelDetails(BaseModel):
    parent_model: str = ""
    format: str = ""
    family: str = ""
    families: Optional[list[str]] = None
    parameter_size: str = ""
    quantization_level: str = ""


class ListModelResponse(BaseModel):
    name: str
    model: str
    modified_at: str
    size: int
    digest: str
    details: ModelDetails
    capabilities: Optional[list[str]] = None


class ListResponse(BaseModel):
    models: list[ListModelResponse]


class ProgressResponse(BaseModel):
    status: str
    digest: Optional[str] = None
    total: Optional[int] = None
    completed: Optional[int] = None


def parse_body(raw: bytes, model: type[T]) -> T:
    """Decode a JSON request body into `model` with Ollama's error behaviour (always 400)."""
    if not raw.strip():
        raise BadRequest("missing request body")
    obj = _decode(raw)
    if not isinstance(obj, dict):
        raise BadRequest(f"json: cannot unmarshal {_json_kind(obj)} into Go value of type api.{model.__name__}")
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise BadRequest(f"invalid value for {model.__name__}.{where}: {err['msg']}") from None


def json_object(raw: bytes) -> dict[str, Any]:
    """The JSON object of a request body, for routes that check their fields by hand; an empty
    body is ``{}``. Anything else raises BadRequest (400) naming the problem."""
    if not raw.strip():
        return {}
    obj = _decode(raw)
    if not isinstance(obj, dict):
        raise BadRequest("invalid request body: expected a JSON object")
    return obj


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise BadRequest("invalid request body: not UTF-8") from None
    except ValueError as exc:
        raise BadRequest(f"invalid JSON in request body: {exc}") from None
    except RecursionError:
        raise BadRequest("invalid JSON in request body: nested too deeply") from None


def go_time(timestamp: float) -> str:
    """A Unix time as Go's `time.Time` JSON (RFC 3339, local offset, trailing zeros trimmed)."""
    local = datetime.fromtimestamp(timestamp, timezone.utc).astimezone()
    base = local.strftime("%Y-%m-%dT%H:%M:%S")
    nanos = int(round((timestamp % 1) * 1e9)) % 1_000_000_000
    frac = f".{nanos:09d}".rstrip("0").rstrip(".")
    offset = local.strftime("%z")
    zone = "Z" if offset in ("+0000", "-0000", "") else f"{offset[:3]}:{offset[3:]}"
    return base + frac + zone


def _reject_constant(name: str) -> Any:
    raise ValueError(f"invalid character '{name[0]}' looking for beginning of value")


def _json_kind(obj: Any) -> str:
    if isinstance(obj, list):
        return "array"
    if isinstance(obj, str):
        return "string"
    if isinstance(obj, bool):
        return "bool"
    if obj is None:
        return "null"
    return "number"
