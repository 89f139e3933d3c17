"""The errors services raise, and the one table that maps them to gRPC status codes.

Service code raises these; the runtime's interceptor turns them into
``context.abort(code, message)``. Messages are shown to students by the
gateway, so they say what went wrong and what to do, in plain words; they never
quote the text of a prompt or document.
"""

from __future__ import annotations

import grpc


class SchulkiError(Exception):
    """A failure whose message is safe to show to the caller."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(SchulkiError):
    """The request itself is wrong: empty, malformed, too long, an unknown format."""


class NotFound(SchulkiError):
    """The named workspace, document or model does not exist."""


class AlreadyExists(SchulkiError):
    """Something with that name exists already."""


class PermissionDenied(SchulkiError):
    """The caller may not do this (a blocked URL, a foreign workspace)."""


class Busy(SchulkiError):
    """Too much is waiting already; the caller should try again shortly."""


class TooLarge(SchulkiError):
    """The upload or recording is over a configured limit."""


class NotReady(SchulkiError):
    """The service cannot serve right now (its model is not loaded, it is stopping)."""


class Unsupported(SchulkiError):
    """The request asks for something this service or model does not do."""


ERROR_CODES: dict[type[SchulkiError], grpc.StatusCode] = {
    InvalidInput: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    Busy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    TooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    NotReady: grpc.StatusCode.UNAVAILABLE,
    Unsupported: grpc.StatusCode.UNIMPLEMENTED,
}
"""The one table from error class to gRPC status code."""


def status_code_for(error: SchulkiError) -> grpc.StatusCode:
    """The gRPC status code for an error, walking up its class hierarchy."""
    for cls in type(error).__mro__:
        if cls in ERROR_CODES:
            return ERROR_CODES[cls]
    return grpc.StatusCode.INTERNAL


class StartupError(Exception):
    """A service cannot start (a missing model, a bad setting); the message is one line for the admin."""


class ModelLoadError(StartupError):
    """A model file or folder is missing, damaged or of the wrong kind; the message is one line."""
