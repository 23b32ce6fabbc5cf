"""OpenAI's error shape: `{"error": {"message", "type", "param", "code"}}` with the HTTP status.

The official SDKs pick their exception class from the status alone (400 BadRequestError, 401
AuthenticationError, 403 PermissionDeniedError, 404 NotFoundError, 409 ConflictError, 422
UnprocessableEntityError, 429 RateLimitError, >= 500 InternalServerError), so the status is what
matters; `type` follows Ollama's OpenAI layer for the statuses Ollama uses (400
invalid_request_error, 404 not_found_error, everything else api_error) and OpenAI's own names for
the ones Ollama never sends (a bad API key is OpenAI's 401 invalid_request_error, code
invalid_api_key). The one table for every `/v1/*` error, the middlewares' included
(`server.asgi_errors`).
"""

from __future__ import annotations

from typing import Any, Optional

import orjson
from starlette.responses import Response

JSON = "application/json; charset=utf-8"

_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class OpenAIError(Exception):
    """A failure answered in OpenAI's error shape; `param` names the offending request field."""

    def __init__(self, message: str, status: int = 400, *, param: Optional[str] = None,
                 code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.status, param=self.param, code=self.code)


def error_type(status: int) -> str:
    return _TYPES.get(status, "api_error")


def error_body(message: str, status: int, *, param: Optional[str] = None,
               code: Optional[str] = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type(status), "param": param, "code": code}}


def from_exception(exc: BaseException) -> OpenAIError:
    """Any failure of the shared inference path as an OpenAIError with the same status and text.

    The native layer's errors (`server.streaming.RequestError`, `server.scheduler.SchedulerError`,
    `server.errors.ServerError`) all carry `.status` and `.message`; anything else is a 500.
    """
    if isinstance(exc, OpenAIError):
        return exc
    status, message = getattr(exc, "status", None), getattr(exc, "message", None)
    if isinstance(status, int) and isinstance(message, str):
        code = "model_not_found" if status == 404 and "not found" in message else None
        return OpenAIError(message, status, code=code)
    return OpenAIError(str(exc) or exc.__class__.__name__, 500)


def error_response(err: OpenAIError) -> Response:
    return Response(orjson.dumps(err.body()), status_code=err.status, media_type=JSON)
