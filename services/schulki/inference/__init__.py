"""The inference service: GGUF chat models through llama.cpp."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schulki.config import Config

if TYPE_CHECKING:
    from schulki.runtime.server import Service


def build(config: Config) -> Service:
    """The inference service for these settings, with the default model when none is set."""
    from schulki.inference.service import InferenceService
    from schulki.models.defaults import chat_model_path

    return InferenceService(config.inference, config.inference.model_path or chat_model_path(config))
