"""Uploads spooled to a temporary file as they arrive, refused as soon as they pass the size limit.

A recording (transcription) or a document (retrieval ingest) goes to disk
piece by piece, so a large upload never sits in memory, and the limit is
checked on every piece: the call fails when the limit is passed, not after
the whole file has arrived. The limit is in bytes; the message quotes it in MB
(10^6 bytes), the unit a school's admin sees on the files themselves.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from types import TracebackType

from schulki.runtime.errors import TooLarge

TOO_BIG = "Die Datei ist zu groß: erlaubt sind höchstens {limit} MB. {hint}(The upload is over the limit of {limit} MB.)"


def megabytes(n: int) -> str:
    """A byte count in MB for a message: "500" for large limits, "0.10" for small ones."""
    return f"{n / 1_000_000:.0f}" if n >= 1_000_000 else f"{n / 1_000_000:.2f}"


def too_big(max_bytes: int, hint: str = "") -> TooLarge:
    """The error for an upload over ``max_bytes``; ``hint`` (German, ending in a space) says what the user can do."""
    return TooLarge(TOO_BIG.format(limit=megabytes(max_bytes), hint=hint))


class Spool:
    """A temporary file an upload is written into; ``discard()`` deletes it (also when the block it opens fails)."""

    def __init__(self, directory: Path | None, max_bytes: int, *, suffix: str = "", prefix: str = "upload-", hint: str = ""):
        self.max_bytes = max_bytes
        self.hint = hint
        self.size = 0
        self._file = tempfile.NamedTemporaryFile(prefix=prefix, suffix=suffix, dir=directory, delete=False)  # noqa: SIM115 - kept open across writes
        self.path = Path(self._file.name)

    def write(self, piece: bytes) -> None:
        """Append a piece; raise TooLarge (and keep nothing more) once the upload passes the limit."""
        self.size += len(piece)
        if self.size > self.max_bytes:
            raise too_big(self.max_bytes, self.hint)
        # A page-cache write of at most one piece: too short to be worth a thread.
        self._file.write(piece)

    def close(self) -> None:
        """Finish writing; the file stays until discard()."""
        self._file.close()

    def discard(self) -> None:
        self._file.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        if error is not None:
            self.discard()
        else:
            self.close()
