"""The ingest pipeline: receive, parse, chunk, embed, store, reporting progress on the way.

The upload is written to a temporary file under the service's ``incoming``
folder (cleared at every start, so a crash leaves nothing behind) and refused
as soon as it passes the size limit. Parsing runs on a worker thread; its
page callback reaches the caller's stream through a queue. Chunks are
embedded in batches through the embeddings service, then the store writes
them all at once and records the document (store.py makes that atomic).
Every step yields Progress, and the last item is the stored DocumentRecord.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from schulki.config import RetrievalConfig
from schulki.retrieval.chunking import chunk_document
from schulki.retrieval.documents import ParsedDocument
from schulki.retrieval.embedder import EmbeddingsClient
from schulki.retrieval.parsing import fetch_url, format_of, parse_file
from schulki.retrieval.store import DocumentRecord, Store, StoredChunk
from schulki.runtime.errors import InvalidInput, SchulkiError, TooLarge

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


class Ingestor:
    """Turns uploads and URLs into stored documents."""

    def __init__(self, store: Store, embedder: EmbeddingsClient, config: RetrievalConfig, incoming: Path):
        self.store = store
        self.embedder = embedder
        self.config = config
        self.incoming = incoming
        # Parsing and embedding are the heavy part: only a few documents at a time, the rest wait their turn.
        self._slots = asyncio.Semaphore(config.max_concurrent_ingests)

    def clear_incoming(self) -> None:
        """Remove uploads left by a crash; called at start-up."""
        self.incoming.mkdir(parents=True, exist_ok=True)
        for leftover in self.incoming.iterdir():
            leftover.unlink(missing_ok=True)

    async def ingest(self, upload: Upload, data: AsyncIterator[bytes]) -> AsyncIterator[Progress | DocumentRecord]:
        """Store one document from its bytes (or its URL); yield progress, then the record."""
        await asyncio.to_thread(self.store.require_workspace, upload.workspace)
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
        fd, name = tempfile.mkstemp(dir=self.incoming, prefix="upload-", suffix=Path(file_name).suffix.lower())
        path = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                if upload.url:
                    out.write(body)
                    yield Progress("receiving", len(body), len(body), "bytes")
                else:
                    async for item in self._receive(data, out):
                        yield item
            size_bytes = path.stat().st_size
            async with self._slots:
                async for item in self._process(upload, source, path, file_name, size_bytes):
                    yield item
        finally:
            path.unlink(missing_ok=True)

    async def _process(self, upload: Upload, source: str, path: Path, file_name: str,
                       size_bytes: int) -> AsyncIterator[Progress | DocumentRecord]:
        """Parse, chunk, embed and store a received file."""
        document: ParsedDocument | None = None
        async for item in self._parse(path, file_name):
            if isinstance(item, ParsedDocument):
                document = item
            else:
                yield item
        chunks = await asyncio.to_thread(
            chunk_document, document, self.config.chunk_chars, self.config.chunk_overlap_chars
        )
        if not chunks:
            raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
        vectors: list[list[float]] = []
        batch = self.config.embed_batch_texts
        yield Progress("embedding", 0, len(chunks), "chunks")
        for start in range(0, len(chunks), batch):
            vectors += await self.embedder.embed([c.text for c in chunks[start:start + batch]])
            yield Progress("embedding", len(vectors), len(chunks), "chunks")
        document_id = uuid.uuid4().hex[:16]
        record = DocumentRecord(
            document_id=document_id, source=source, format=document.format, chunk_count=len(chunks),
            page_count=document.page_count, size_bytes=size_bytes,
        )
        stored = [StoredChunk(document_id, source, chunk, vector) for chunk, vector in zip(chunks, vectors)]
        yield Progress("storing", 0, len(chunks), "chunks")
        await asyncio.to_thread(self.store.add_document, upload.workspace, record, stored)
        yield Progress("storing", len(chunks), len(chunks), "chunks")
        log.info("ingested %s into %s: %s, %d chunks, %d bytes", document_id, upload.workspace,
                 record.format, record.chunk_count, size_bytes)
        yield record

    async def _receive(self, data: AsyncIterator[bytes], out) -> AsyncIterator[Progress]:
        """Write the upload's pieces to the open temporary file, refusing it once it passes the limit."""
        size = reported = 0
        async for piece in data:
            size += len(piece)
            if size > self.config.max_upload_bytes:
                raise TooLarge(
                    f"Die Datei ist zu groß: höchstens {self.config.max_upload_bytes // (1024 * 1024)} MiB. "
                    f"(upload over {self.config.max_upload_bytes} bytes)"
                )
            out.write(piece)
            if size - reported >= RECEIVE_REPORT_BYTES:
                reported = size
                yield Progress("receiving", size, 0, "bytes")
        yield Progress("receiving", size, size, "bytes")

    async def _parse(self, path: Path, file_name: str) -> AsyncIterator[Progress | ParsedDocument]:
        """Parse on a worker thread; yield page progress as it comes, then the document."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Progress] = asyncio.Queue()

        def report(done: int, total: int) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, Progress("parsing", done, total, "pages"))

        def parse() -> ParsedDocument:
            try:
                return parse_file(path, file_name, max_pages=self.config.max_pages, progress=report)
            except SchulkiError:
                raise
            except Exception as error:  # a parser library failing on a malformed file is a bad file
                log.warning("parsing %s failed: %s", format_of(file_name), type(error).__name__)
                raise InvalidInput(
                    "Die Datei ist beschädigt oder kann nicht gelesen werden. (the file could not be parsed)"
                ) from error

        yield Progress("parsing", 0, 0, "pages")
        task = asyncio.ensure_future(asyncio.to_thread(parse))
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait({task, getter}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            yield task.result()
        finally:
            if not task.done():
                task.cancel()
