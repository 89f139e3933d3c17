"""A streamed chat's quota work (admission, reservation, settlement) runs on the quotas' writer thread, and stays exact.

A real gateway on a real inference service: parallel streamed chats are
counted to the token, the writes never run on the event loop that streams
the answers, and every text event of the stream is, byte for byte, the
event the response models write.
"""

from __future__ import annotations

import concurrent.futures
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from schulki.gateway.api.responses import ChatCompletionChunk, ChunkChoice, Delta
from schulki.gateway.api.sse import sse_event
from sqlalchemy import event as sqlalchemy_event

from tests.gateway_stack import Stack, running_stack, stack_config


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("quota-writer")
    config = stack_config(folder)
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


def stream_chat(stack: Stack, api_key: str, text: str, max_tokens: int = 12) -> list[bytes]:
    """The raw events of one streamed chat with its usage, each ``data: ...`` line with its blank line."""
    body = {
        "model": "schulki-chat",
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": max_tokens,
        "temperature": 0,
        "messages": [{"role": "user", "content": text}],
    }
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.stream("POST", stack.url + "/v1/chat/completions", json=body, headers=headers, timeout=300) as response:
        assert response.status_code == 200, response.read()
        raw = b"".join(response.iter_bytes())
    return [event + b"\n\n" for event in raw.split(b"\n\n") if event]


def usage_of(events: list[bytes]) -> dict[str, int]:
    last = json.loads(events[-2].removeprefix(b"data: "))
    assert last["choices"] == [], last
    return last["usage"]


def test_parallel_streamed_chats_are_settled_to_the_token(stack):
    user = stack.add_user("settle-parallel", "student")
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: stream_chat(stack, user.api_key, f"Nenne ein Tier, Nummer {i}."), range(6)))
    reported = sum(usage_of(events)["total_tokens"] for events in answers)
    assert reported > 0
    # every reservation was replaced by the answer's real usage before its finish went out: nothing pending, nothing lost
    assert stack.gateway.accounts.tokens_today(user.account.id) == reported
    assert [events[-1] for events in answers] == [b"data: [DONE]\n\n"] * 6


def test_a_chat_commits_twice_and_only_on_the_quotas_thread(stack):
    """Admission and reservation are one transaction, the settlement the other, both off the event loop."""
    user = stack.add_user("settle-thread", "student")
    stream_chat(stack, user.api_key, "Sag Hallo.")  # the key's first use: its lookup is cached from here on
    commits: list[str] = []

    def committed(_connection: Any) -> None:
        commits.append(threading.current_thread().name)

    sqlalchemy_event.listen(stack.gateway.accounts.engine, "commit", committed)
    try:
        events = stream_chat(stack, user.api_key, "Sag Hallo.")
    finally:
        sqlalchemy_event.remove(stack.gateway.accounts.engine, "commit", committed)
    assert len(commits) == 2 and all(name.startswith("schulki-quotas") for name in commits), commits
    assert stack.gateway.accounts.tokens_today(user.account.id) > usage_of(events)["total_tokens"] > 0  # both chats, settled


def test_an_upload_is_admitted_on_the_quotas_thread_not_on_the_event_loop(stack, monkeypatch):
    """Requests that are not chats (uploads, embeddings, searches, transcriptions, document questions) count against
    the quota through the same writer thread."""
    user = stack.add_user("admit-thread", "student")
    threads: list[str] = []
    accounts = stack.gateway.accounts
    for name in ("count_usage", "tokens_today"):
        method = getattr(accounts, name)
        monkeypatch.setattr(accounts, name, lambda *a, _m=method, **k: (threads.append(threading.current_thread().name), _m(*a, **k))[1])
    response = httpx.post(
        stack.url + "/v1/files",
        headers={"Authorization": f"Bearer {user.api_key}"},
        files={"file": ("notiz.txt", b"Die Katze schlaeft.", "text/plain")},
        data={"purpose": "assistants"},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert len(threads) >= 2, threads  # today's tokens, the request
    assert all(name.startswith("schulki-quotas") for name in threads), threads


def test_every_text_event_is_the_one_the_response_models_write(stack):
    user = stack.add_user("settle-shape", "student")
    events = stream_chat(stack, user.api_key, "Zähle von eins bis fünf.", max_tokens=16)
    first = json.loads(events[0].removeprefix(b"data: "))
    frame = ChatCompletionChunk(id=first["id"], created=first["created"], model=first["model"], choices=[])
    assert events[0] == sse_event(frame.model_copy(update={"choices": [ChunkChoice(delta=Delta(role="assistant", content=""))]}))
    texts = [e for e in events[1:-3] if json.loads(e.removeprefix(b"data: "))["choices"][0]["delta"]]
    assert texts, events
    for event in texts:
        content = json.loads(event.removeprefix(b"data: "))["choices"][0]["delta"]["content"]
        assert event == sse_event(frame.model_copy(update={"choices": [ChunkChoice(delta=Delta(content=content))]}))
    finish = json.loads(events[-3].removeprefix(b"data: "))
    assert finish["choices"][0]["finish_reason"] in ("stop", "length")
