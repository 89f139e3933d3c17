"""The retrieval service: workspaces, document ingest and hybrid search."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # not at run time: the parse and upkeep processes import this package, and need neither
    from schulki.config import Config
    from schulki.runtime.server import Service


def build(config: Config) -> Service:
    """The retrieval service for these settings: the embedded store unless Weaviate is configured."""
    from schulki.retrieval.service import RetrievalService

    return RetrievalService(config)
