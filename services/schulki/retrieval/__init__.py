"""The retrieval service: workspaces, document ingest and hybrid search."""

from __future__ import annotations

from typing import TYPE_CHECKING

from schulki.config import Config

if TYPE_CHECKING:
    from schulki.runtime.server import Service


def build(config: Config) -> Service:
    """The retrieval service for these settings: the embedded store unless Weaviate is configured."""
    from schulki.retrieval.service import RetrievalService

    return RetrievalService(config)
