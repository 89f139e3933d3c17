"""The retrieval service: workspaces, document ingest and hybrid search."""
