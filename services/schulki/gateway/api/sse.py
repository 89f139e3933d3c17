"""Server-sent events, the one place their frames are written: ``data: <json>`` per event, ``data: [DONE]`` at the end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

DONE = b"data: [DONE]\n\n"


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One event: a model's fields all written, but for those it omits while None (``responses.omitted``: a chunk's usage,
    an empty delta's role), as OpenAI leaves them out."""
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


class TextEvents:
    """The event of one streamed text piece, written as ``sse_event`` writes it, without building and dumping a model per
    piece: the event's frame is dumped once, around a placeholder for the text, and each piece fills in its own text as
    JSON. The bytes are the same as ``sse_event(make(piece))`` (tests/test_gateway_sse.py holds them side by side)."""

    _PLACEHOLDER = "\x00schulki-piece\x00"  # a string no model's frame holds: control characters are escaped in JSON

    def __init__(self, make: Callable[[str], BaseModel]) -> None:
        frame = sse_event(make(self._PLACEHOLDER)).decode()
        marker = json.dumps(self._PLACEHOLDER, ensure_ascii=False)
        if frame.count(marker) != 1:
            raise ValueError("the frame must carry the piece's text exactly once")
        before, after = frame.split(marker)
        self._before, self._after = before.encode(), after.encode()

    def __call__(self, text: str) -> bytes:
        return self._before + json.dumps(text, ensure_ascii=False).encode() + self._after


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """The streamed answer: no caching, and no buffering by a proxy in front (nginx's X-Accel-Buffering)."""
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
