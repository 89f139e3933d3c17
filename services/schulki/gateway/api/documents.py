"""POST /v1/documents/summarize and POST /v1/documents/translate: a whole stored document (a schulki extension).

Both take ``{"workspace": …, "document_id": …}`` and either answer with JSON
(the default), or with ``"stream": true`` stream server-sent events: one
``document.progress`` event per part ("Teil 3 von 12"), ``document.text``
events with the result so far, then the result (``document.summary`` or
``document.translation``) and ``[DONE]``. A translation without streaming
answers with the file itself (``format``: txt, md or docx); streamed, its last
event carries the file base64-encoded. A client that disconnects stops the
work: no further part is sent to the model.

Errors use OpenAI's shape: another user's workspace and an unknown document
give 404, an unknown length, language or format 400. They are found before the
stream starts, so a streamed request fails with the right status too.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from fastapi import APIRouter
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel

from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError, streamed_error_body
from schulki.gateway.api.responses import DocumentProgress, DocumentSummary, DocumentText, DocumentTranslation, TranslatedFile
from schulki.gateway.api.schemas import SummarizeRequest, TranslateRequest
from schulki.gateway.api.sse import DONE, event_stream, sse_event
from schulki.gateway.documents.export import FORMATS, export, file_name
from schulki.gateway.documents.whole_document import Done, Event, Progress, Text

router = APIRouter(prefix="/v1/documents")
DocumentResult = Callable[[Done], BaseModel]


async def _start(events: AsyncIterator[Event]) -> Event:
    """The first event: the workspace, document, model and quota are checked before it, so errors get their status."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise ApiError(502, "The work ended without a result.", "server_error") from None


async def _stream(first: Event, events: AsyncGenerator[Event, None], result: DocumentResult) -> AsyncIterator[bytes]:
    event = first
    try:
        while True:
            if isinstance(event, Progress):
                yield sse_event(DocumentProgress(part=event.part, parts=event.parts, stage=event.stage, message=event.message()))
            elif isinstance(event, Text):
                yield sse_event(DocumentText(text=event.text))
            elif isinstance(event, Done):
                yield sse_event(result(event))
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:  # the status line is sent already: the error goes into the stream, as chat does
        yield sse_event(streamed_error_body(error, broke_off="The work broke off."))
    finally:
        await events.aclose()  # a client that left: the running call is cancelled, no further part starts
    yield DONE


async def _finish(first: Event, events: AsyncIterator[Event]) -> Done:
    event = first
    try:
        while not isinstance(event, Done):
            event = await anext(events)
    except StopAsyncIteration:
        raise ApiError(502, "The work ended without a result.", "server_error") from None
    return event


@router.post("/summarize", response_model=DocumentSummary)
async def summarize(body: SummarizeRequest, gateway: GatewayDep, account: AccountDep) -> DocumentSummary | StreamingResponse:
    """The summary, or with ``stream`` server-sent document.progress, document.text and document.summary events."""
    length = body.length
    events = gateway.summarize_document(account, body.workspace, body.document_id, length, body.model)
    first = await _start(events)

    def result(done: Done) -> DocumentSummary:
        return DocumentSummary(source=done.source, parts=done.parts, length=length, text=done.text)

    if body.stream:
        return event_stream(_stream(first, events, result))
    return result(await _finish(first, events))


@router.post(
    "/translate",
    response_class=Response,
    responses={
        200: {
            "description": "The translated file (format txt, md or docx), or with stream the events ending in document.translation.",
            "content": {media: {"schema": {"type": "string", "format": "binary"}} for media in FORMATS.values()},
        }
    },
)
async def translate(body: TranslateRequest, gateway: GatewayDep, account: AccountDep) -> Response:
    language, file_format = body.language, body.format
    if file_format not in FORMATS:
        raise ApiError(400, f"format must be one of {', '.join(FORMATS)}.", param="format")
    events = gateway.translate_document(account, body.workspace, body.document_id, language, body.model)
    first = await _start(events)

    def result(done: Done) -> DocumentTranslation:
        content = base64.b64encode(export(done.blocks, file_format, done.source)).decode()
        file = TranslatedFile(name=file_name(done.source, language, file_format), format=file_format, content_base64=content)
        return DocumentTranslation(source=done.source, parts=done.parts, language=language, text=done.text, file=file)

    if body.stream:
        return event_stream(_stream(first, events, result))
    done = await _finish(first, events)
    name = file_name(done.source, language, file_format)
    return Response(
        export(done.blocks, file_format, done.source),
        media_type=FORMATS[file_format],
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )
