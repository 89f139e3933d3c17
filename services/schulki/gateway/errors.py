"""The one table from the gateway's domain errors to what the user is told: the API's OpenAI error and the tab's message.

The use cases raise these (a service that is down, a used-up quota, a model
the user may not pick, a document, file or workspace they may not use, an
admin's operation asked by someone else, a service's refusal as a gRPC
error); ``api/errors.py`` answers each in OpenAI's shape and
``ui/common.py`` shows it as a plain message in the page's language, both from
the entry here, so neither catches them one by one. Built like
``runtime/errors.py``: a class's entry also serves its subclasses.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from schulki.gateway.accounts.quotas import QuotaExceeded
from schulki.gateway.agents.loop import AgentRefused
from schulki.gateway.context import AdminOnly
from schulki.gateway.documents.questions import QuestionRefused
from schulki.gateway.documents.stored_files import FileRefused
from schulki.gateway.documents.whole_document import DocumentRefused
from schulki.gateway.documents.workspaces import WorkspaceRefused
from schulki.gateway.lessons.tasks import TaskRefused
from schulki.gateway.moderation.flags import TeachersOnly
from schulki.gateway.nodes.chat_models import ModelChoiceError
from schulki.gateway.nodes.clients import AnswerBrokeOff, ServiceDown
from schulki.gateway.web.i18n import Strings

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
"""A service's gRPC status as the API's HTTP status and OpenAI error type."""


@dataclass(frozen=True)
class Told:
    """What the user is told about an error: the API's answer (status, OpenAI type, message, code, param, headers)
    and the tab's message (German on the German page)."""

    status: int
    type: str
    message: str
    page: str
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] | None = None


def _broke_off(_error: AnswerBrokeOff, s: Strings) -> Told:
    message = "The node writing this answer stopped part-way; ask again and another node answers."
    return Told(502, "server_error", message, s["answer_broke_off"], code="answer_broke_off")


def _service_down(error: ServiceDown, s: Strings) -> Told:
    message = (
        f"No node that serves the model {error.model!r} is available right now; try again shortly."
        if error.model
        else f"The {error.service} service is not available right now; try again shortly."
    )
    page = s["service_down"].format(service=s.service(error.service))
    return Told(503, "service_unavailable", message, page, code="service_unavailable")


def _quota(error: QuotaExceeded, _s: Strings) -> Told:
    headers = {"Retry-After": str(error.retry_after_s)}
    return Told(429, "rate_limit_error", error.message, error.message, code="rate_limit_exceeded", headers=headers)


def _refused_by_service(error: grpc.RpcError, s: Strings) -> Told:
    status, type_ = HTTP_FOR_GRPC.get(error.code(), (500, "server_error"))
    message = error.details() or error.code().name
    return Told(status, type_, message, s["error"].format(message=message), code=error.code().name.lower())


def _model_choice(error: ModelChoiceError, _s: Strings) -> Told:
    if error.unknown:
        return Told(404, "invalid_request_error", f"{error} GET /v1/models lists the models.", str(error), "model_not_found", "model")
    message = f"{error} GET /v1/models lists the models you may use."
    return Told(403, "permission_error", message, str(error), "model_not_allowed", "model")


def _document(error: DocumentRefused, _s: Strings) -> Told:
    return Told(error.status, "not_found_error" if error.status == 404 else "invalid_request_error", error.message, error.message)


def _question(error: QuestionRefused, _s: Strings) -> Told:
    return Told(error.status, "invalid_request_error", error.message, error.message, error.code, error.param)


def _file(error: FileRefused, _s: Strings) -> Told:
    type_ = {404: "not_found_error", 429: "rate_limit_error"}.get(error.status, "invalid_request_error")
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return Told(error.status, type_, error.message, error.message, error.code, error.param, headers)


def _workspace(error: WorkspaceRefused, s: Strings) -> Told:
    # the API shows a workspace as the vector store vs_<workspace>
    if error.read_only:
        message = "Du darfst diesen Arbeitsbereich nur lesen. (You may read this vector store but not change it.)"
        return Told(403, "permission_error", message, s["read_only"], code="read_only")
    message = f"No vector store with id {'vs_' + error.name!r} found."
    return Told(404, "not_found_error", message, s["no_access"], code="vector_store_not_found")


def _agent(error: AgentRefused, _s: Strings) -> Told:
    return Told(error.status, "permission_error" if error.status == 403 else "invalid_request_error", error.message, error.message)


def _task(error: TaskRefused, _s: Strings) -> Told:
    type_ = {403: "permission_error", 404: "not_found_error", 429: "rate_limit_error"}.get(error.status, "invalid_request_error")
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    return Told(error.status, type_, error.message, error.message, error.code, headers=headers)


def _admin_only(_error: AdminOnly, s: Strings) -> Told:
    return Told(403, "permission_error", "Only admins may do this.", s["admin_only"], code="admin_only")


def _teachers_only(_error: TeachersOnly, s: Strings) -> Told:
    page = "Nur für Lehrkräfte und Admins." if s.lang == "de" else "Only for teachers and admins."
    return Told(403, "permission_error", "Only teachers and admins may see moderation flags.", page, code="teachers_only")


TOLD: dict[type[Exception], Callable[[Any, Strings], Told]] = {
    AnswerBrokeOff: _broke_off,
    ServiceDown: _service_down,
    QuotaExceeded: _quota,
    grpc.RpcError: _refused_by_service,
    ModelChoiceError: _model_choice,
    DocumentRefused: _document,
    QuestionRefused: _question,
    FileRefused: _file,
    WorkspaceRefused: _workspace,
    AdminOnly: _admin_only,
    TeachersOnly: _teachers_only,
    AgentRefused: _agent,
    TaskRefused: _task,
}
"""The one table from domain error to what the API and the page tell the user."""


def told(error: BaseException, s: Strings) -> Told | None:
    """What the user is told about an error, walking up its class hierarchy; None for an error not in the table (a bug)."""
    for cls in type(error).__mro__:
        if cls in TOLD:
            return TOLD[cls](error, s)
    return None
