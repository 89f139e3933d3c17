"""Receiving a recording: the options first, then the chunks, spooled to a temporary file.

The upload goes to disk as it arrives, so a long recording never sits in
memory, and the size limit is enforced while receiving: the call fails as soon
as the limit is passed, not after the whole file has arrived. The options come
first, so they are checked before the caller uploads anything.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from schulki.runtime.errors import InvalidInput, TooLarge
from schulki.transcription.v1 import transcription_service_pb2 as pb

TOO_BIG = (
    "Die Datei ist zu groß: erlaubt sind höchstens {limit} MB. Kürze die Aufnahme oder speichere sie kleiner, "
    "zum Beispiel als mp3. (The upload is over the limit of {limit} MB.)"
)
EMPTY = "Die Datei ist leer. (The upload is empty.)"
_EXTENSION = re.compile(r"\.([A-Za-z0-9]{1,5})$")


@dataclass
class Upload:
    """A received recording on disk; ``discard()`` deletes it."""

    options: pb.TranscribeOptions
    path: Path
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _megabytes(n: int) -> str:
    return f"{n / 1_000_000:.0f}" if n >= 1_000_000 else f"{n / 1_000_000:.2f}"


async def receive(
    requests: AsyncIterator[pb.TranscribeRequest],
    max_bytes: int,
    directory: Path | None,
    check_options: Callable[[pb.TranscribeOptions], None],
) -> Upload:
    """Read the stream into a temporary file; the options are checked before any audio is stored.

    A stream that starts with audio uses the default options. Raises InvalidInput
    for options sent late or twice and for an empty upload, TooLarge over the limit.
    """
    options: pb.TranscribeOptions | None = None
    size = 0
    file = None
    try:
        async for request in requests:
            kind = request.WhichOneof("payload")
            if kind == "options":
                if options is not None or file is not None:
                    raise InvalidInput(
                        "Die Einstellungen müssen genau einmal und vor der Aufnahme kommen. "
                        "(The options must come once, in the first message.)"
                    )
                options = request.options
                check_options(options)
            elif kind == "audio_chunk":
                if options is None:
                    options = pb.TranscribeOptions()
                    check_options(options)
                if file is None:
                    match = _EXTENSION.search(options.file_name)
                    suffix = "." + match.group(1).lower() if match else ""
                    # The file outlives this loop (the engine reads it); it is closed below and removed on failure.
                    file = tempfile.NamedTemporaryFile(prefix="schulki-audio-", suffix=suffix, dir=directory, delete=False)  # noqa: SIM115
                size += len(request.audio_chunk)
                if size > max_bytes:
                    raise TooLarge(TOO_BIG.format(limit=_megabytes(max_bytes)))
                # A page-cache write of at most one chunk: too short to be worth a thread.
                file.write(request.audio_chunk)
        if size == 0 or file is None or options is None:  # options without any audio
            raise InvalidInput(EMPTY)
        file.close()
        return Upload(options, Path(file.name), size)
    except BaseException:
        if file is not None:
            file.close()
            Path(file.name).unlink(missing_ok=True)
        raise
