"""The retrieval service: workspaces, document ingest and hybrid search."""

from __future__ import annotations

from schulki.config import Config


def build(config: Config):
    """The retrieval service for these settings: the embedded store unless Weaviate is configured."""
    from schulki.retrieval.service import RetrievalService

    return RetrievalService(config)
