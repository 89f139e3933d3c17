"""The ingest pipeline: receive, parse, chunk, embed, store, reporting progress on the way.

The upload is written to a temporary file under the service's ``incoming``
folder (cleared at every start, so a crash leaves nothing behind) and refused
as soon as it passes the size limit or the workspace's storage quota.
Parsing and chunking run in a separate process with memory and time limits
(parse_process.py); its page reports reach the caller's stream through a
queue. Chunks are embedded in batches through the embeddings service, then
the store writes them all at once and records the document (store.py makes
that atomic, and checks the quota once more under its write lock). Every
step yields Progress, and the last item is the stored DocumentRecord.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path

from schulki.config import RetrievalConfig
from schulki.retrieval.class_yield import ClassYield
from schulki.retrieval.embedder import EmbeddingsClient
from schulki.retrieval.parse_process import ParsedChunks, ParseLimits, parse_in_process
from schulki.retrieval.parsing import fetch_url, format_of
from schulki.retrieval.store import DocumentRecord, Store, StoredChunk, over_quota
from schulki.runtime.errors import InvalidInput
from schulki.runtime.fair_queue import FairScheduler
from schulki.runtime.spool import Spool
from schulki.runtime.threads import stream_from_task

log = logging.getLogger("schulki.retrieval")

RECEIVE_REPORT_BYTES = 1024 * 1024
"""Report receiving progress at most once per MiB."""


@dataclass
class Progress:
    """How far ingest has come: a stage, units done and in all (0 when not known), and the unit."""

    stage: str
    done: int
    total: int
    unit: str


@dataclass
class Upload:
    """What the first message of an ingest names."""

    workspace: str
    file_name: str
    url: str = ""
    user: str = ""
    """Who uploads (the gateway's pseudonym, or the caller's address): slots are shared fairly between users."""


def workspace_quota_bytes(config: RetrievalConfig, workspace: str) -> int:
    """The workspace's storage quota in bytes from ``workspace_quota_mb`` (longest matching start); 0 means none."""
    matches = [prefix for prefix in config.workspace_quota_mb if workspace.startswith(prefix)]
    if not matches:
        return 0
    return config.workspace_quota_mb[max(matches, key=len)] * 1024 * 1024


def ingest_slots(config: RetrievalConfig, cpus: int | None = None) -> FairScheduler:
    """The fair queue in front of parsing and embedding: ``max_concurrent_ingests`` slots (empty: the CPUs this
    process may run on, at least 2), of which one user holds ``ingests_per_user`` (empty: a quarter, at least 1)."""
    slots = config.max_concurrent_ingests or max(2, cpus or len(os.sched_getaffinity(0)))
    return FairScheduler(
        slots=slots,
        max_queued=config.max_queued_ingests,
        max_queued_per_user=config.max_queued_ingests_per_user,
        max_running_per_user=config.ingests_per_user or max(1, slots // 4),
    )


class Ingestor:
    """Turns uploads and URLs into stored documents."""

    def __init__(self, store: Store, embedder: EmbeddingsClient, config: RetrievalConfig, incoming: Path, class_yield: ClassYield):
        self.store = store
        self.embedder = embedder
        self.class_yield = class_yield
        self.config = config
        self.incoming = incoming
        # Parsing and embedding are the heavy part: only a few documents at a time, the rest wait their turn,
        # fairly between users, so one user's big files do not hold back everyone else's.
        self.slots = ingest_slots(config)

    def clear_incoming(self) -> None:
        """Remove uploads left by a crash; called at start-up."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)

    async def ingest(self, upload: Upload, data: AsyncIterator[bytes]) -> AsyncIterator[Progress | DocumentRecord]:
        """Store one document from its bytes (or its URL); yield progress, then the record."""
        await asyncio.to_thread(self.store.require_workspace, upload.workspace)
        quota = workspace_quota_bytes(self.config, upload.workspace)
        used = await asyncio.to_thread(self.store.used_bytes, upload.workspace) if quota else 0
        if quota and used >= quota:  # a full workspace is refused before a single byte is received
            raise over_quota(used, quota)
        if upload.url:
            source = upload.url.strip()
        else:
            if not upload.file_name.strip():
                raise InvalidInput("Der Dateiname fehlt. (file_name is empty)")
            format_of(upload.file_name)  # refuse an unknown extension before a single byte is received
            source = upload.file_name
        body = b""
        if upload.url:
            yield Progress("receiving", 0, 0, "bytes")
            body, file_name = await asyncio.to_thread(
                fetch_url, source, self.config.allowed_url_hosts, self.config.max_upload_bytes, self.config.url_timeout_s
            )
        else:
            file_name = upload.file_name
        # The temporary file keeps the extension: some readers (openpyxl) go by it.
        spool = Spool(self.incoming, self.config.max_upload_bytes, suffix=Path(file_name).suffix.lower())
        try:
            with spool:
                if upload.url:
                    spool.write(body)
                    yield Progress("receiving", len(body), len(body), "bytes")
                else:
                    async for item in self._receive(data, spool, quota - used if quota else 0, used, quota):
                        yield item
            async with self.slots.turn(upload.user):
                async for event in self._process(upload, source, spool.path, file_name, spool.size, quota):
                    yield event
        finally:
            spool.discard()

    async def _process(
        self, upload: Upload, source: str, path: Path, file_name: str, size_bytes: int, quota: int
    ) -> AsyncIterator[Progress | DocumentRecord]:
        """Parse, chunk, embed and store a received file."""
        document: ParsedChunks | None = None
        turns = self.class_yield.upload()
        await turns.wait_turn()
        async for item in self._parse(path, file_name):
            if isinstance(item, ParsedChunks):
                document = item
            else:
                yield item
        if document is None:  # _parse ends with the parsed chunks or raises
            raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
        chunks = document.chunks
        if not chunks:
            raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
        text_bytes = sum(len(c.text.encode()) for c in chunks)
        if quota:  # checked before embedding, the slow part; the store checks again when it writes
            used = await asyncio.to_thread(self.store.used_bytes, upload.workspace)
            if used + max(size_bytes, text_bytes) > quota:
                raise over_quota(used, quota)
        vectors: list[list[float]] = []
        yield Progress("embedding", 0, len(chunks), "chunks")
        while len(vectors) < len(chunks):
            load = await turns.wait_turn()  # the class's waiting chats go first
            batch = self.config.embed_batch_texts_in_class if load and load.running else self.config.embed_batch_texts
            vectors += await self.embedder.embed([c.text for c in chunks[len(vectors) : len(vectors) + batch]])
            yield Progress("embedding", len(vectors), len(chunks), "chunks")
        document_id = uuid.uuid4().hex[:16]
        record = DocumentRecord(
            document_id=document_id,
            source=source,
            format=document.format,
            chunk_count=len(chunks),
            page_count=document.page_count,
            size_bytes=size_bytes,
            text_bytes=text_bytes,
        )
        stored = [StoredChunk(document_id, source, chunk, vector) for chunk, vector in zip(chunks, vectors, strict=True)]
        yield Progress("storing", 0, len(chunks), "chunks")
        await asyncio.to_thread(self.store.add_document, upload.workspace, record, stored, quota)
        yield Progress("storing", len(chunks), len(chunks), "chunks")
        log.info(
            "ingested %s into %s: %s, %d chunks, %d bytes", document_id, upload.workspace, record.format, record.chunk_count, size_bytes
        )
        yield record

    async def _receive(self, data: AsyncIterator[bytes], spool: Spool, room: int, used: int, quota: int) -> AsyncIterator[Progress]:
        """Write the upload's pieces to the spool, refusing it once it passes the room left in the workspace or the size limit."""
        reported = 0
        async for piece in data:
            size = spool.size + len(piece)
            if quota and size > room:
                raise over_quota(used, quota)
            spool.write(piece)
            if size - reported >= RECEIVE_REPORT_BYTES:
                reported = size
                yield Progress("receiving", size, 0, "bytes")
        yield Progress("receiving", spool.size, spool.size, "bytes")

    async def fetch_page(self, url: str, user: str, max_chars: int = 0) -> tuple[str, str, bool]:
        """A web page's text, fetched and parsed as a URL ingest does (the same address checks, the same limited parse
        process, a turn in the same fair queue) but stored nowhere: (text, format, whether it was cut at max_chars)."""
        body, file_name = await asyncio.to_thread(
            fetch_url, url.strip(), self.config.allowed_url_hosts, self.config.max_upload_bytes, self.config.url_timeout_s
        )
        spool = Spool(self.incoming, self.config.max_upload_bytes, suffix=Path(file_name).suffix.lower())
        try:
            with spool:
                spool.write(body)
            async with self.slots.turn(user):
                # chunks without overlap joined again are the page's text once
                parsed = await parse_in_process(spool.path, file_name, self._limits(overlap_chars=0), lambda _done, _total: None)
        finally:
            spool.discard()
        text = "\n\n".join(chunk.text for chunk in parsed.chunks)
        limit = max_chars or self.config.max_document_chars
        return text[:limit], parsed.format, len(text) > limit

    def _limits(self, overlap_chars: int) -> ParseLimits:
        return ParseLimits(
            memory_bytes=self.config.parse_memory_mb * 1024 * 1024,
            timeout_s=self.config.parse_timeout_s,
            max_pages=self.config.max_pages,
            max_chars=self.config.max_document_chars,
            max_chunks=self.config.max_chunks_per_document,
            chunk_chars=self.config.chunk_chars,
            overlap_chars=overlap_chars,
        )

    async def _parse(self, path: Path, file_name: str) -> AsyncIterator[Progress | ParsedChunks]:
        """Parse and chunk in a separate process (parse_process.py); yield page progress as it comes, then the chunks.

        Closing this early cancels the parse, and parse_in_process kills its child on the way out."""
        limits = self._limits(self.config.chunk_overlap_chars)
        yield Progress("parsing", 0, 0, "pages")

        def parse(emit: Callable[[Progress], None]) -> Awaitable[ParsedChunks]:
            return parse_in_process(path, file_name, limits, lambda done, total: emit(Progress("parsing", done, total, "pages")))

        async with aclosing(stream_from_task(parse)) as items:
            async for item in items:
                yield item
