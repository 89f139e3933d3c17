"""The embeddings service: texts to vectors with GGUF embedding models."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schulki.config import Config

if TYPE_CHECKING:
    from schulki.runtime.server import Service


def build(config: Config) -> Service:
    """The embeddings service for these settings, with the default model when none is set."""
    from schulki.embeddings.service import EmbeddingsService
    from schulki.models.defaults import embeddings_model_path

    return EmbeddingsService(config.embeddings, config.embeddings.model_path or embeddings_model_path(config))
