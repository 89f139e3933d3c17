"""Errors in OpenAI's JSON shape.

Routes raise ApiError, or let through a use case's domain error (the table in
``gateway/errors.py``: a service that is down, a used-up quota, a gRPC refusal,
a model or document the user may not use) or a request model's validation
error; ``install(app)`` answers each of them in OpenAI's shape with one
handler, so no route catches them itself.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from schulki.gateway.errors import TOLD, told
from schulki.gateway.web.i18n import Strings

ENGLISH = Strings("en")

MAX_MESSAGE_CHARS = 500
"""Longest error message sent: messages name what was wrong, and an id or value a client sent may be 100,000 characters."""


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict:
    """OpenAI's error JSON; the one place it is built."""
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 1] + "…"
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    """An error to answer with OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code, self.headers = status, message, type_, param, code, headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_exception(error: BaseException) -> ApiError:
    """The API error for anything a use case can raise (the table in ``gateway/errors.py``); other errors are bugs, raised again."""
    if isinstance(error, ApiError):
        return error
    answer = told(error, ENGLISH)
    if answer is None:
        raise error
    return ApiError(answer.status, answer.message, answer.type, answer.param, answer.code, answer.headers)


def streamed_error_body(error: BaseException, broke_off: str = "The answer broke off.") -> dict[str, Any]:
    """The body of an error that happens after the status line went out, so it goes into the stream: the error's own
    when the error table knows it (a service call's errors), else a server error, logged with its traceback (a bug)."""
    try:
        return from_exception(error).body()
    except Exception:
        logging.getLogger(__name__).exception("a streamed answer failed")
        return error_body(broke_off, "server_error")


_TYPE_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def _param(location: Sequence[Any]) -> str | None:
    """OpenAI's way of naming a field: ``messages[0].role``; pydantic's union tags (``list[str]``) left out."""
    param = ""
    for part in location:
        if part == "body":
            continue
        if isinstance(part, int):
            param += f"[{part}]"
        elif str(part).isidentifier() and str(part) not in _TYPE_TAGS:
            param += f".{part}" if param else str(part)
    return param or None


def from_validation_errors(problems: Sequence[Any]) -> ApiError:
    """A request body that does not fit its model: OpenAI's 400 naming the first wrong field."""
    first = problems[0] if problems else {"loc": (), "msg": "invalid request", "type": ""}
    param = _param(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "json_invalid":
        return ApiError(400, "The request body is not valid JSON.")
    if first["type"] in ("model_type", "model_attributes_type", "dict_type") and param is None:
        return ApiError(400, "The request body must be a JSON object.")
    if first["type"] == "unsupported_parameter":
        return ApiError(400, message, param=param, code="unsupported_parameter")
    if first["type"] == "refused":  # the field's own message, which names it
        return ApiError(400, message, param=param)
    if first["type"] == "missing":
        return ApiError(400, f"{param} is required.", param=param)
    return ApiError(400, f"{param}: {message}" if param else message, param=param)


def install(app: FastAPI) -> None:
    """Answer every error a /v1 route raises in OpenAI's shape, in one place."""

    async def answer(_request: Request, error: Exception) -> JSONResponse:
        return from_exception(error).response()

    async def invalid(request: Request, error: Exception) -> JSONResponse:
        assert isinstance(error, RequestValidationError)
        if not request.url.path.startswith("/v1/"):  # the login form and the like keep FastAPI's own answer
            return await request_validation_exception_handler(request, error)
        return from_validation_errors(error.errors()).response()

    kinds: list[type[Exception]] = [ApiError, *TOLD]
    for kind in kinds:
        app.add_exception_handler(kind, answer)
    app.add_exception_handler(RequestValidationError, invalid)
