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
import json
from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response, StreamingResponse

from schulki.gateway.accounts import Account
from schulki.gateway.api.chat import api_account
from schulki.gateway.api.errors import ApiError, from_exception, streamed_error_body
from schulki.gateway.api.schemas import SummarizeRequest, TranslateRequest
from schulki.gateway.chat_models import ModelChoiceError
from schulki.gateway.context import Gateway
from schulki.gateway.document_export import FORMATS, export, file_name
from schulki.gateway.document_work import DocumentRefused, Done, Progress, Text


def _error(error: BaseException) -> ApiError:
    if isinstance(error, DocumentRefused):
        return ApiError(error.status, error.message, "not_found_error" if error.status == 404 else "invalid_request_error")
    if isinstance(error, ModelChoiceError):
        return ApiError(
            404 if error.unknown else 403, str(error), "invalid_request_error" if error.unknown else "permission_error", "model"
        )
    return from_exception(error)


async def _start(events: AsyncIterator) -> object:
    """The first event: the workspace, document, model and quota are checked before it, so errors get their status."""
    try:
        return await anext(events)
    except StopAsyncIteration:
        raise ApiError(502, "The work ended without a result.", "server_error") from None
    except Exception as error:
        raise _error(error) from error


def _event(payload: dict) -> bytes:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode()


def _progress(event: Progress) -> dict:
    return {"object": "document.progress", "part": event.part, "parts": event.parts, "stage": event.stage, "message": event.message()}


async def _sse(first, events: AsyncGenerator, result) -> AsyncIterator[bytes]:
    event = first
    try:
        while True:
            if isinstance(event, Progress):
                yield _event(_progress(event))
            elif isinstance(event, Text):
                yield _event({"object": "document.text", "text": event.text})
            elif isinstance(event, Done):
                yield _event(result(event))
            event = await anext(events)
    except StopAsyncIteration:
        pass
    except Exception as error:  # the status line is sent already: the error goes into the stream, as chat does
        yield _event(streamed_error_body(error, _error, "The work broke off."))
    finally:
        await events.aclose()  # a client that left: the running call is cancelled, no further part starts
    yield b"data: [DONE]\n\n"


async def _finish(first, events: AsyncIterator) -> Done:
    event = first
    try:
        while not isinstance(event, Done):
            event = await anext(events)
    except StopAsyncIteration:
        raise ApiError(502, "The work ended without a result.", "server_error") from None
    except Exception as error:
        raise _error(error) from error
    return event


def _streaming(body: AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter(prefix="/v1/documents")
    account_of = api_account(gateway)

    @routes.post("/summarize")
    async def summarize(body: SummarizeRequest, account: Account = Depends(account_of)):
        length = body.length
        events = gateway.summarize_document(account, body.workspace, body.document_id, length, body.model)
        first = await _start(events)

        def result(done: Done) -> dict:
            return {"object": "document.summary", "source": done.source, "parts": done.parts, "length": length, "text": done.text}

        if body.stream:
            return _streaming(_sse(first, events, result))
        return JSONResponse(result(await _finish(first, events)))

    @routes.post("/translate")
    async def translate(body: TranslateRequest, account: Account = Depends(account_of)):
        language, file_format = body.language, body.format
        if file_format not in FORMATS:
            raise ApiError(400, f"format must be one of {', '.join(FORMATS)}.", param="format")
        events = gateway.translate_document(account, body.workspace, body.document_id, language, body.model)
        first = await _start(events)

        def result(done: Done) -> dict:
            return {
                "object": "document.translation",
                "source": done.source,
                "parts": done.parts,
                "language": language,
                "text": done.text,
                "file": {
                    "name": file_name(done.source, language, file_format),
                    "format": file_format,
                    "content_base64": base64.b64encode(export(done.blocks, file_format, done.source)).decode(),
                },
            }

        if body.stream:
            return _streaming(_sse(first, events, result))
        done = await _finish(first, events)
        name = file_name(done.source, language, file_format)
        return Response(
            export(done.blocks, file_format, done.source),
            media_type=FORMATS[file_format],
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    return routes
