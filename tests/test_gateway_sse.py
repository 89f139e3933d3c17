"""The streamed chat's text events: written from a frame dumped once per answer, byte for byte what the models write."""

from __future__ import annotations

import json

import pytest
from schulki.gateway.api.responses import ChatCompletionChunk, ChunkChoice, Delta
from schulki.gateway.api.sse import TextEvents, sse_event

TEXTS = [
    "",
    "Hallo",
    " Grüße aus München – „zitiert“ ß",
    'quotes " and \\ backslashes',
    "line\nbreak\tand tab\r",
    "\x00\x01\x1f control characters",
    "\x00schulki-piece\x00",  # the frame's own placeholder, as a model's text
    "emoji 🐉 and \u2028\u2029 separators",
    '{"json": [1, 2]} inside',
]


def chunk_with(text: str, model: str = "gemma-3-270m") -> ChatCompletionChunk:
    chunk = ChatCompletionChunk(id="chatcmpl-abc", created=1767225600, model=model, choices=[])
    return chunk.model_copy(update={"choices": [ChunkChoice(delta=Delta(content=text))]})


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_event_is_byte_for_byte_the_models_event(text):
    events = TextEvents(chunk_with)
    assert events(text) == sse_event(chunk_with(text))


def test_the_frame_keeps_a_model_name_with_characters_json_escapes():
    def make(text: str) -> ChatCompletionChunk:
        return chunk_with(text, model='odd "model" \\ name ü')

    events = TextEvents(make)
    for text in TEXTS:
        assert events(text) == sse_event(make(text))
        assert json.loads(events(text).removeprefix(b"data: "))["choices"][0]["delta"] == {"content": text}


def test_a_frame_without_the_text_is_refused():
    with pytest.raises(ValueError):
        TextEvents(lambda text: chunk_with("always the same"))
