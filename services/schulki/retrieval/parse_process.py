"""Parsing and chunking in a separate process with memory and time limits.

A hostile or merely unlucky file (a table whose header multiplies its text, a
deeply nested page, one line of 100 MB, a library bug that loops) must never
take the retrieval service down. So every document is parsed and chunked in a
child process of its own:

- the child sets its own limits before it imports a single parser:
  ``RLIMIT_AS`` (address space, ``retrieval.parse_memory_mb``) and
  ``RLIMIT_CPU`` (a backstop a little above the time limit); a parser that
  wants more memory gets MemoryError or dies, and only the child dies;
- the parent waits at most ``retrieval.parse_timeout_s`` and then kills it;
- the child reports progress as lines on its stdout and writes its result
  (the chunks, or the error a student may read) to a file the parent names.

Whatever the child does, the parent answers with a status: the child's own
error (INVALID_ARGUMENT, RESOURCE_EXHAUSTED), RESOURCE_EXHAUSTED for a child
that ran out of time or memory, and INVALID_ARGUMENT for one that died
otherwise. A new process per document costs 0.15 s of CPU here for a text
file (starting Python and importing its parser; a PDF's or a spreadsheet's
parser more), little beside embedding: the child imports neither the settings
nor the web page parser.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from schulki.runtime.errors import TooLarge

OUT_OF_MEMORY_EXIT = 3
"""The child's exit code when it ran out of memory and could not even write that down."""
CPU_SLACK_S = 5
"""RLIMIT_CPU is the time limit plus this, so the parent's wall-clock kill normally comes first."""


@dataclass
class ParseLimits:
    """What one document may cost while it is parsed and chunked."""

    memory_bytes: int
    timeout_s: float
    max_pages: int
    max_chars: int
    max_chunks: int
    chunk_chars: int
    overlap_chars: int


@dataclass
class ParsedChunks:
    """What the child hands back: the document's chunks and what the parser recognised."""

    format: str
    page_count: int
    chunks: list  # list[schulki.retrieval.documents.Chunk]

    @property
    def text_chars(self) -> int:
        return sum(len(c.text) for c in self.chunks)


def _too_long(timeout_s: float) -> TooLarge:
    from schulki.runtime.errors import TooLarge

    return TooLarge(
        f"Das Lesen der Datei dauerte länger als {timeout_s:g} s und wurde abgebrochen; bitte teile sie auf. "
        "(parsing took longer than the time limit)"
    )


def _too_big(memory_bytes: int) -> TooLarge:
    from schulki.runtime.errors import TooLarge

    return TooLarge(
        f"Die Datei braucht beim Lesen mehr als {memory_bytes // (1024 * 1024)} MiB Speicher und wurde abgelehnt; "
        "bitte teile sie auf. (parsing needs more memory than allowed)"
    )


async def parse_in_process(path: Path, file_name: str, limits: ParseLimits, report: Callable[[int, int], None]) -> ParsedChunks:
    """Parse and chunk ``path`` in a child process; ``report(done, total)`` gets its progress.

    Raises the child's SchulkiError, TooLarge when it ran out of time or
    memory, InvalidInput when it died otherwise.
    """
    import asyncio
    import logging

    from schulki.retrieval.documents import Chunk
    from schulki.runtime.errors import InvalidInput, TooLarge

    log = logging.getLogger("schulki.retrieval")
    result_path = f"{path}.result.json"
    request = {
        "path": str(path),
        "file_name": file_name,
        "result": result_path,
        "memory_bytes": limits.memory_bytes,
        "cpu_s": int(limits.timeout_s) + CPU_SLACK_S,
        "max_pages": limits.max_pages,
        "max_chars": limits.max_chars,
        "max_chunks": limits.max_chunks,
        "chunk_chars": limits.chunk_chars,
        "overlap_chars": limits.overlap_chars,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "schulki.retrieval.parse_process",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        # openpyxl imports numpy, whose OpenBLAS starts a thread with its own buffers per core: address space the
        # memory limit counts (up to 200 MiB before the first byte is read) and a parse never uses
        env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
    )

    async def follow() -> None:
        assert process.stdin is not None and process.stdout is not None, "both are pipes (PIPE above)"
        process.stdin.write(json.dumps(request).encode())
        await process.stdin.drain()
        process.stdin.close()
        async for line in process.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"progress":
                report(int(parts[1]), int(parts[2]))
        await process.wait()

    try:
        try:
            await asyncio.wait_for(follow(), limits.timeout_s)
        except TimeoutError:
            log.warning("parsing a %s file ran past %g s; the parse process was killed", os.path.splitext(file_name)[1], limits.timeout_s)
            raise _too_long(limits.timeout_s) from None
        try:
            with open(result_path, encoding="utf-8") as handle:
                result = json.load(handle)
        except (OSError, ValueError):
            result = None
        if result is None:
            code = process.returncode
            log.warning("the parse process of a %s file ended with %s and no result", os.path.splitext(file_name)[1], code)
            if code == OUT_OF_MEMORY_EXIT or code in (-signal.SIGKILL, -signal.SIGXCPU, -signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS):
                # A library that cannot allocate under RLIMIT_AS often aborts or crashes instead of raising.
                raise _too_big(limits.memory_bytes)
            raise InvalidInput("Die Datei ist beschädigt oder kann nicht gelesen werden. (the file could not be parsed)")
        if "error" in result:
            kind = {"TooLarge": TooLarge, "InvalidInput": InvalidInput}.get(result["error"]["kind"], InvalidInput)
            raise kind(result["error"]["message"])
        chunks = [Chunk(text=t, index=i, page=p, section=s) for t, i, p, s in result["chunks"]]
        return ParsedChunks(format=result["format"], page_count=result["page_count"], chunks=chunks)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        with contextlib.suppress(OSError):
            os.unlink(result_path)


# The child. ---------------------------------------------------------------------------


def _limit(kind: int, value: int) -> None:
    _soft, hard = resource.getrlimit(kind)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(kind, (value, hard if hard != resource.RLIM_INFINITY else resource.RLIM_INFINITY))


def _write(path: str, result: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(result, handle, ensure_ascii=False)
    os.replace(tmp, path)  # the parent sees a whole result or none


def child_main() -> int:
    """Parse one document as the JSON request on stdin asks; the limits are set before any parser is imported."""
    request = json.loads(sys.stdin.buffer.read())
    _limit(resource.RLIMIT_AS, request["memory_bytes"])
    _limit(resource.RLIMIT_CPU, request["cpu_s"])
    _limit(resource.RLIMIT_CORE, 0)  # a crash must not leave the document's text in a core file
    try:
        from pathlib import Path

        from schulki.retrieval.chunking import chunk_document
        from schulki.retrieval.parsing import parse_file
        from schulki.runtime.errors import InvalidInput, SchulkiError, TooLarge

        def progress(done: int, total: int) -> None:
            sys.stdout.write(f"progress {done} {total}\n")
            sys.stdout.flush()

        try:
            document = parse_file(
                Path(request["path"]),
                request["file_name"],
                max_pages=request["max_pages"],
                progress=progress,
                max_chars=request["max_chars"],
            )
            chunks = chunk_document(document, request["chunk_chars"], request["overlap_chars"])
            if len(chunks) > request["max_chunks"]:
                raise TooLarge(
                    f"Die Datei ergibt {len(chunks)} Abschnitte; erlaubt sind höchstens {request['max_chunks']} pro Dokument. "
                    "Bitte teile sie auf. (too many chunks)"
                )
            if not chunks:
                raise InvalidInput("Die Datei enthält keinen Text. (no text found)")
            result = {
                "format": document.format,
                "page_count": document.page_count,
                "chunks": [[c.text, c.index, c.page, c.section] for c in chunks],
            }
        except SchulkiError as error:
            result = {
                "error": {
                    "kind": type(error).__name__ if isinstance(error, (TooLarge, InvalidInput)) else "InvalidInput",
                    "message": error.message,
                }
            }
        except MemoryError:
            raise
        except RecursionError:  # a document nested deeper than the parser can walk
            result = {
                "error": {
                    "kind": "InvalidInput",
                    "message": "Die Datei ist zu tief verschachtelt, um sie zu lesen. (the document is nested too deeply)",
                }
            }
        except Exception as error:
            if isinstance(error, OSError) and error.errno == errno.ENOMEM:
                # the memory limit met outside Python's allocator (an import listing a folder, a mapped file)
                raise MemoryError from error
            result = {
                "error": {
                    "kind": "InvalidInput",
                    "message": "Die Datei ist beschädigt oder kann nicht gelesen werden. (the file could not be parsed)",
                }
            }
        _write(request["result"], result)
    except MemoryError:
        # Free what we can by leaving the frame, then say why; writing may fail too, then the exit code says it.
        message = (
            f"Die Datei braucht beim Lesen mehr als {request['memory_bytes'] // (1024 * 1024)} MiB Speicher und wurde "
            "abgelehnt; bitte teile sie auf. (parsing needs more memory than allowed)"
        )
        try:
            _write(request["result"], {"error": {"kind": "TooLarge", "message": message}})
        except MemoryError:
            return OUT_OF_MEMORY_EXIT
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
