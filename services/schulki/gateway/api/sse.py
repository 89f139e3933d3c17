"""Server-sent events, the one place their frames are written: ``data: <json>`` per event, ``data: [DONE]`` at the end."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse
from pydantic import BaseModel

DONE = b"data: [DONE]\n\n"


def sse_event(payload: BaseModel | dict[str, Any]) -> bytes:
    """One event: a model's fields all written, but for those it omits while None (``responses.omitted``: a chunk's usage,
    an empty delta's role), as OpenAI leaves them out."""
    body = payload.model_dump(mode="json") if isinstance(payload, BaseModel) else payload
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode()


def event_stream(events: AsyncIterator[bytes]) -> StreamingResponse:
    """The streamed answer: no caching, and no buffering by a proxy in front (nginx's X-Accel-Buffering)."""
    return StreamingResponse(events, media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
