"""POST /v1/audio/transcriptions: multipart upload in, json, text, srt, vtt or verbose_json out."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import UploadFile

from schulki.gateway.api.chat import WHISPER_ALIAS
from schulki.gateway.api.deps import AccountDep, GatewayDep
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.responses import Transcription, TranscriptionSegment, TranscriptionVerbose
from schulki.gateway.api.schemas import TranscriptionForm, parse_form
from schulki.gateway.nodes.clients import CHUNK_BYTES
from schulki.transcription.export import MEDIA_TYPES, to_srt, to_txt, to_vtt

LANGUAGE_NAMES = {
    "de": "german",
    "en": "english",
    "fr": "french",
    "it": "italian",
    "es": "spanish",
    "tr": "turkish",
    "uk": "ukrainian",
    "ar": "arabic",
    "pl": "polish",
    "ru": "russian",
    "nl": "dutch",
    "pt": "portuguese",
}


EXPORTS: dict[str, tuple[str, Callable[[Sequence[Any]], str]]] = {"text": ("txt", to_txt), "srt": ("srt", to_srt), "vtt": ("vtt", to_vtt)}
"""The response formats that are files: the export's format and its writer."""


async def _chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(CHUNK_BYTES):
        yield chunk


router = APIRouter(prefix="/v1")


@router.post(
    "/audio/transcriptions",
    response_model=Transcription | TranscriptionVerbose,
    responses={
        200: {"content": {media: {"schema": {"type": "string"}} for media in (MEDIA_TYPES["txt"], MEDIA_TYPES["srt"], MEDIA_TYPES["vtt"])}}
    },
)
async def transcriptions(request: Request, gateway: GatewayDep, account: AccountDep) -> Response:
    """The recording's text: json (the default), verbose_json with segments, or the text, srt or vtt file."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise ApiError(400, "Send the recording as multipart/form-data with a field named file.", param="file")
    form = await request.form(max_files=1, max_fields=20)  # the gateway's own limits, before any field is looked at
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "The field file with the recording is missing.", param="file")
        fields = parse_form(TranscriptionForm, {key: value for key, value in form.items() if key != "file"})
        if (fields.model or WHISPER_ALIAS) != WHISPER_ALIAS:
            raise ApiError(
                404, f"The model {fields.model!r} does not exist here; use {WHISPER_ALIAS!r}.", param="model", code="model_not_found"
            )
        response_format = fields.response_format or "json"
        language = fields.language or ""
        segments, detected, duration = [], language, 0.0
        async for event in gateway.transcribe(account, _chunks(upload), upload.filename or "audio", language):
            kind = event.WhichOneof("event")
            if kind == "language":
                detected = event.language.language
            elif kind == "segment":
                segments.append(event.segment)
            elif kind == "summary":
                duration = event.summary.duration
    finally:
        await form.close()  # the upload's temporary file goes at once
    if response_format in EXPORTS:
        file_format, render = EXPORTS[response_format]
        return PlainTextResponse(render(segments), media_type=MEDIA_TYPES[file_format])
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    if response_format == "json":
        return JSONResponse(Transcription(text=text).model_dump(mode="json"))
    verbose = TranscriptionVerbose(
        language=LANGUAGE_NAMES.get(detected, detected),
        duration=duration,
        text=text,
        segments=[TranscriptionSegment(id=s.index, start=s.start, end=s.end, text=s.text) for s in segments],
    )
    return JSONResponse(verbose.model_dump(mode="json"))
