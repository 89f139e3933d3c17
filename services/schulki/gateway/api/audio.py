"""POST /v1/audio/transcriptions: multipart upload in, json, text, srt, vtt or verbose_json out."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.datastructures import UploadFile

from schulki.gateway.accounts import Account
from schulki.gateway.api.chat import WHISPER_ALIAS, api_account
from schulki.gateway.api.errors import ApiError
from schulki.gateway.api.schemas import TranscriptionForm, parse_form
from schulki.gateway.clients import CHUNK_BYTES
from schulki.gateway.context import Gateway
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


async def _chunks(upload: UploadFile):
    while chunk := await upload.read(CHUNK_BYTES):
        yield chunk


def router(gateway: Gateway) -> APIRouter:
    routes = APIRouter(prefix="/v1")
    account_of = api_account(gateway)

    @routes.post("/audio/transcriptions")
    async def transcriptions(request: Request, account: Account = Depends(account_of)):
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
        text = " ".join(s.text.strip() for s in segments if s.text.strip())
        if response_format == "json":
            return JSONResponse({"text": text})
        if response_format == "text":
            return PlainTextResponse(to_txt(segments), media_type=MEDIA_TYPES["txt"])
        if response_format == "srt":
            return PlainTextResponse(to_srt(segments), media_type=MEDIA_TYPES["srt"])
        if response_format == "vtt":
            return PlainTextResponse(to_vtt(segments), media_type=MEDIA_TYPES["vtt"])
        return JSONResponse(
            {
                "task": "transcribe",
                "language": LANGUAGE_NAMES.get(detected, detected),
                "duration": duration,
                "text": text,
                "segments": [
                    {
                        "id": s.index,
                        "seek": 0,
                        "start": s.start,
                        "end": s.end,
                        "text": s.text,
                        "tokens": [],
                        "temperature": 0.0,
                        "avg_logprob": 0.0,
                        "compression_ratio": 0.0,
                        "no_speech_prob": 0.0,
                    }
                    for s in segments
                ],
            }
        )

    return routes
