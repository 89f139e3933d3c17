"""Receiving a recording: the options first, then the chunks, spooled to a temporary file (runtime/spool.py).

The options come first, so they are checked before the caller uploads anything.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from schulki.runtime.errors import InvalidInput
from schulki.runtime.spool import Spool
from schulki.transcription.v1 import transcription_service_pb2 as pb

SHORTER = "Kürze die Aufnahme oder speichere sie kleiner, zum Beispiel als mp3. "
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
    file: Spool | None = None
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
                    file = Spool(directory, max_bytes, suffix=suffix, prefix="schulki-audio-", hint=SHORTER)
                file.write(request.audio_chunk)
        if file is None or options is None or file.size == 0:  # options without any audio
            raise InvalidInput(EMPTY)
        file.close()
        return Upload(options, file.path, file.size)
    except BaseException:
        if file is not None:
            file.discard()
        raise
