"""The OpenAPI document of the OpenAI-compatible API, at ``/v1/openapi.json``: the /v1 routes only, with their errors.

FastAPI's own document would list the login form, and the Gradio app mounted
at ``/`` served its own at ``/openapi.json``: Gradio's internal routes, to
anyone, and none of /v1. The gateway turns Gradio's off (app.py) and serves
this one instead. Every /v1 route answers errors in OpenAI's shape
(errors.error_body); the document declares the ones each route can give:
the body and rate limits and the API key on every route, 404 where the path
names an object, 403 where a route may change a vector store the caller may
only read.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from schulki.gateway.api.editor_schemas import InfillResult, TextCompletion
from schulki.gateway.api.responses import (
    ChatCompletionChunk,
    DocumentProgress,
    DocumentSummary,
    DocumentText,
    DocumentTranslation,
)
from schulki.gateway.api.schemas import FileUpload, TranscriptionUpload

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": "string", "nullable": True},
                "code": {"type": "string", "nullable": True},
            },
            "required": ["message", "type"],
        }
    },
    "required": ["error"],
}
EVERY_ROUTE = {
    "400": "The request is not valid (a missing or wrong field, a body that is not JSON).",
    "401": "No API key or session, or an unknown one.",
    "408": "The request body arrived too slowly.",
    "413": "The request body or upload is larger than the gateway allows, or a quota is used up.",
    "429": "Too many requests of this user (the per-minute limit or the running-jobs limit); see Retry-After.",
}
NAMED_OBJECT = {"404": "No such object of this user (or it is not theirs)."}
WRITES_A_STORE = {"403": "The vector store may only be read by this user."}
STREAMS: dict[str, tuple[type[BaseModel], ...]] = {
    "/v1/chat/completions": (ChatCompletionChunk,),
    "/v1/completions": (TextCompletion,),
    "/v1/infill": (InfillResult,),
    "/v1/documents/summarize": (DocumentProgress, DocumentText, DocumentSummary),
    "/v1/documents/translate": (DocumentProgress, DocumentText, DocumentTranslation),
}
"""The events of each route that streams with ``"stream": true`` (text/event-stream, one JSON object per ``data:``)."""
FORMS: dict[str, type[BaseModel]] = {"/v1/files": FileUpload, "/v1/audio/transcriptions": TranscriptionUpload}
"""The upload routes, which read their multipart form themselves (within the gateway's limits), and its fields."""


def _errors(path: str, method: str) -> dict[str, str]:
    errors = dict(EVERY_ROUTE)
    if "{" in path:
        errors.update(NAMED_OBJECT)
    if path.startswith("/v1/vector_stores/{") and method in ("post", "delete"):
        errors.update(WRITES_A_STORE)
    return errors


def _add_streams_and_forms(document: dict[str, Any]) -> None:
    """Each streaming route's 200 answer lists its events as text/event-stream, each upload route its form, with their
    models among the schemas."""
    models = [(model, "serialization") for model in {model for events in STREAMS.values() for model in events}]
    models += [(form, "validation") for form in FORMS.values()]
    _keys, schemas = models_json_schema(models, ref_template="#/components/schemas/{model}")  # type: ignore[arg-type]
    for name, schema in schemas.get("$defs", {}).items():
        document["components"]["schemas"].setdefault(name, schema)
    for path, form in FORMS.items():
        operation = document["paths"].get(path, {}).get("post")
        if operation is not None:
            schema = {"$ref": f"#/components/schemas/{form.__name__}"}
            operation.setdefault("requestBody", {"required": True, "content": {"multipart/form-data": {"schema": schema}}})
    for path, events in STREAMS.items():
        answer = document["paths"].get(path, {}).get("post", {}).get("responses", {}).get("200")
        if answer is not None:
            refs = [{"$ref": f"#/components/schemas/{model.__name__}"} for model in events]
            answer.setdefault("content", {})["text/event-stream"] = {"schema": refs[0] if len(refs) == 1 else {"oneOf": refs}}


def v1_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(title="schulki API (OpenAI-compatible)", version="1", routes=app.routes)
    # the gateway's other routes (login, health) are for the browser and the roll-out, not for API clients
    document["paths"] = {path: item for path, item in document.get("paths", {}).items() if path.startswith("/v1/")}
    document.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    _add_streams_and_forms(document)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)  # FastAPI's validation errors: schulki answers those with 400 in OpenAI's shape
            for status, description in _errors(path, method).items():
                responses.setdefault(
                    status,
                    {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                )
    return document


def install(app: FastAPI) -> None:
    """Serve the /v1 document at /v1/openapi.json (before the catch-all that answers unknown /v1 routes)."""
    cached: dict[str, Any] = {}

    @app.get("/v1/openapi.json", include_in_schema=False)
    def openapi_v1() -> JSONResponse:
        if not cached:
            cached.update(v1_document(app))
        return JSONResponse(cached)
