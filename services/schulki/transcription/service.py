"""The TranscriptionService: recordings in as chunks, segments out as they are recognised.

A call goes through four steps: the options are checked, the upload is spooled
to disk (size limit enforced while it arrives), the file is probed (format,
sound track, duration limit) and, once a turn is free, the engine transcribes
it window by window. Every failure before the first segment ends the call with
a clear status and a German message; the temporary file is always deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path

import grpc

from schulki.config import TranscriptionConfig
from schulki.runtime.errors import InvalidInput, NotReady, Unsupported
from schulki.runtime.fair_queue import FairScheduler
from schulki.transcription import audio, upload
from schulki.transcription.engine import Language, Segment, SpeechEngine, TranscriptionDone, TranscriptionJob
from schulki.transcription.v1 import transcription_service_pb2 as pb
from schulki.transcription.v1 import transcription_service_pb2_grpc as pb_grpc

log = logging.getLogger("schulki.transcription")

TASKS = {pb.TASK_UNSPECIFIED: "transcribe", pb.TASK_TRANSCRIBE: "transcribe", pb.TASK_TRANSLATE: "translate"}
MAX_PROMPT_CHARS = 1000
"""Longest initial prompt; Whisper reads only its last 223 tokens anyway."""
NO_SPEECH = "Keine Sprache gefunden: die Aufnahme ist still oder enthält nur Geräusche. (No speech found.)"


def language_code(language: str) -> str:
    """The ISO 639-1 code of a language tag: "de", "DE" and "de-AT" all give "de"."""
    return language.strip().lower().replace("_", "-").split("-")[0]


class TranscriptionService(pb_grpc.TranscriptionServiceServicer):
    """Serves one Whisper model to many callers, fairly and a few at a time."""

    service_name = pb.DESCRIPTOR.services_by_name["TranscriptionService"].full_name

    def __init__(self, config: TranscriptionConfig, model_path: Path):
        self.config = config
        self.engine = SpeechEngine(model_path, config)
        self.scheduler = FairScheduler(
            slots=config.max_concurrent,
            max_queued=config.max_queued,
            max_queued_per_user=config.max_queued_per_user,
            max_running_per_user=config.max_running_per_user,
        )
        self._loaded = False

    def register(self, server: grpc.aio.Server) -> None:
        pb_grpc.add_TranscriptionServiceServicer_to_server(self, server)

    async def start(self) -> None:
        if self.config.upload_dir is not None:
            self.config.upload_dir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.engine.load)
        self._loaded = True

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)

    def check_options(self, options: pb.TranscribeOptions) -> None:
        """Refuse options the model cannot follow, before any audio is uploaded."""
        if options.task not in TASKS:
            raise InvalidInput(f"Unbekannte Aufgabe {options.task}: erlaubt sind transcribe und translate. (unknown task)")
        language = language_code(options.language)
        if language and language not in self.engine.languages:
            raise InvalidInput(
                f"Die Sprache {options.language!r} kennt das Modell nicht. Gib einen Sprachcode wie de, en, fr oder tr an, "
                "oder lass das Feld leer, dann wird die Sprache erkannt. (unknown language code)"
            )
        if TASKS[options.task] == "translate" and not self.engine.multilingual:
            raise Unsupported("Dieses Modell kann nur Englisch und nicht übersetzen. (This model is English-only and cannot translate.)")
        if len(options.initial_prompt) > MAX_PROMPT_CHARS:
            raise InvalidInput(
                f"Die Stichwörter sind zu lang: höchstens {MAX_PROMPT_CHARS} Zeichen. (initial_prompt is over {MAX_PROMPT_CHARS} characters.)"
            )

    async def Transcribe(
        self, request_iterator: AsyncIterator[pb.TranscribeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.TranscribeResponse]:
        if not self._loaded:
            raise NotReady("Das Sprachmodell wird noch geladen. (The speech model is still loading.)")
        received = await upload.receive(request_iterator, self.config.max_upload_bytes, self.config.upload_dir, self.check_options)
        try:
            info = await asyncio.to_thread(audio.probe, received.path, self.config.max_duration_s)
            options = received.options
            log.info(
                "transcribe: %s (%s), %.1f s, %d bytes, task %s",
                info.format_name,
                info.codec,
                info.duration,
                received.size,
                TASKS[options.task],
            )
            job = TranscriptionJob(
                path=received.path,
                language=language_code(options.language) or None,
                task=TASKS[options.task],
                initial_prompt=options.initial_prompt.strip() or None,
                word_timestamps=options.word_timestamps,
                vad=not options.disable_vad,
            )
            async with self.scheduler.turn(options.user or context.peer()), aclosing(self.engine.transcribe(job)) as events:
                # aclosing: a caller that goes away stops the worker now, not when the generator is collected.
                async for event in events:
                    if isinstance(event, Segment):
                        yield pb.TranscribeResponse(segment=segment_to_proto(event))
                    elif isinstance(event, Language):
                        yield pb.TranscribeResponse(language=pb.LanguageInfo(language=event.language, probability=event.probability))
                    elif isinstance(event, TranscriptionDone):
                        yield pb.TranscribeResponse(summary=summary_to_proto(event))
        finally:
            received.discard()


def segment_to_proto(segment: Segment) -> pb.Segment:
    return pb.Segment(
        index=segment.index,
        start=segment.start,
        end=segment.end,
        text=segment.text,
        words=[pb.Word(start=w.start, end=w.end, text=w.text, probability=w.probability) for w in segment.words],
    )


def summary_to_proto(done: TranscriptionDone) -> pb.TranscriptionSummary:
    return pb.TranscriptionSummary(
        duration=done.duration,
        speech_duration=done.speech_duration,
        segment_count=done.segment_count,
        empty_reason="" if done.segment_count else NO_SPEECH,
    )
