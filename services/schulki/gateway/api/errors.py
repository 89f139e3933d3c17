"""Errors in OpenAI's JSON shape, and the one table from gRPC status to HTTP status."""

from __future__ import annotations

import grpc
from fastapi.responses import JSONResponse

from schulki.gateway.clients import AnswerBrokeOff, ServiceDown
from schulki.gateway.quotas import QuotaExceeded

HTTP_FOR_GRPC: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.UNAUTHENTICATED: (401, "authentication_error"),
    grpc.StatusCode.PERMISSION_DENIED: (403, "permission_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "invalid_request_error"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limit_error"),
    grpc.StatusCode.UNIMPLEMENTED: (501, "invalid_request_error"),
    grpc.StatusCode.UNAVAILABLE: (503, "service_unavailable"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "timeout"),
}


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
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def from_grpc(error: grpc.RpcError) -> ApiError:
    status, type_ = HTTP_FOR_GRPC.get(error.code(), (500, "server_error"))
    return ApiError(status, error.details() or error.code().name, type_, code=error.code().name.lower())


def from_exception(error: BaseException) -> ApiError:
    """The API error for anything a service call can raise."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, AnswerBrokeOff):
        return ApiError(
            502,
            "The node writing this answer stopped part-way; ask again and another node answers.",
            "server_error",
            code="answer_broke_off",
        )
    if isinstance(error, ServiceDown):
        message = (
            f"No node that serves the model {error.model!r} is available right now; try again shortly."
            if error.model
            else f"The {error.service} service is not available right now; try again shortly."
        )
        return ApiError(503, message, "service_unavailable", code="service_unavailable")
    if isinstance(error, QuotaExceeded):
        return ApiError(
            429, error.message, "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(error.retry_after_s)}
        )
    if isinstance(error, grpc.RpcError):
        return from_grpc(error)
    raise error
