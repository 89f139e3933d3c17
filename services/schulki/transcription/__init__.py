"""The transcription service: recordings to text with faster-whisper."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schulki.config import Config

if TYPE_CHECKING:
    from schulki.runtime.server import Service


def build(config: Config) -> Service:
    """The transcription service for these settings, with the default Whisper model when none is set."""
    from schulki.models.defaults import speech_model_path
    from schulki.transcription.service import TranscriptionService

    return TranscriptionService(config.transcription, config.transcription.model_path or speech_model_path(config))
