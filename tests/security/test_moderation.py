"""Moderation through the real gateway: a child's self-harm question gets the help answer and never reaches the model,
a blocked answer is cut in the stream and replaced, and a flag reaches the teacher of the child's class only.

One stack with the real inference service; its rules are the shipped German defaults plus one school rule that
blocks every answer longer than 80 characters (as a school would add a word; here a length, so that the small test
model is sure to write it), to see the cut in the stream whatever the model says.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator

import httpx
import pytest
from schulki.gateway.moderation.answers import BLOCKED
from schulki.gateway.moderation.rules import DEFAULT_RULES

from tests.gateway_stack import Stack, running_stack, service_log, stack_config
from tests.security.conftest import User, gradio_call, make_user
from tests.service_support import wait_until

LONG_ANSWER = r"[\s\S]{80}"
"""The school's extra violence pattern in this stack: any answer of 80 characters (no question here is that long)."""
HELP_LINES = ("116 111", "0800 111 0 111", "0800 111 0 222")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("moderation")
    rules = folder / "regeln.toml"
    rules.write_text(
        DEFAULT_RULES.read_text(encoding="utf-8")
        .replace("[violence]", "[violence]\npatterns = ['" + LONG_ANSWER + "']", 1)
        .replace("\npatterns = []\n\n[sexual]", "\n\n[sexual]", 1),
        encoding="utf-8",
    )
    config = stack_config(folder)
    config.moderation.rules_file = rules
    # greedy answers, also in the Chat tab (which sets no temperature): sampled at 0.7 the small model sometimes ends a
    # story within 80 characters, and then there is nothing to cut
    config.inference.default_temperature = 0.0
    # room for 80 characters in the Chat tab's answer too (the test stack's 24 tokens can end a story before them)
    config.gateway.max_chat_tokens = 96
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("inference",), config=config) as running:
        running.wait_available("inference")
        yield running


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _shown_answer(payload: object) -> list[str]:
    """The words of the last message the Chat tab shows (Gradio sends it as sanitised HTML)."""
    last = payload[0][-1]  # type: ignore[index]
    assert last["role"] == "assistant", last
    return _words(html.unescape(re.sub(r"<[^>]+>", " ", "".join(part["text"] for part in last["content"]))))


def _chat(stack: Stack, user: User, text: str, max_tokens: int = 8, stream: bool = False) -> httpx.Response:
    body = {"model": "schulki-chat", "max_tokens": max_tokens, "temperature": 0, "seed": 1, "stream": stream}
    body["messages"] = [{"role": "user", "content": text}]
    return httpx.post(stack.url + "/v1/chat/completions", headers=user.bearer, json=body, timeout=180)


def test_a_self_harm_question_gets_the_help_answer_and_the_model_is_not_asked(stack):
    student = make_user(stack, "student", ("7a",))
    with service_log() as log:
        before = set(log.ids_of("inference", "Chat"))
        blocked = _chat(stack, student, "Ich will mich umbringen, es hat alles keinen Sinn.")
        ordinary = _chat(stack, student, "Wie starb Caesar?")  # this one is answered by the model: its Chat line ends
        wait_until(lambda: len(log.ids_of("inference", "Chat") - before) >= 1, 60, "the ordinary question's Chat call")
        asked = log.ids_of("inference", "Chat") - before
    assert blocked.status_code == 200, blocked.text
    answer = blocked.json()["choices"][0]
    assert answer["message"]["content"] == BLOCKED["self_harm"]
    assert all(line in answer["message"]["content"] for line in HELP_LINES)
    assert answer["finish_reason"] == "content_filter"
    assert blocked.json()["usage"]["total_tokens"] == 0
    assert ordinary.status_code == 200 and ordinary.json()["choices"][0]["finish_reason"] != "content_filter"
    assert len(asked) == 1, asked  # the ordinary question only: the blocked one never reached the inference service
    # the same through the Chat tab (Gradio's API, as the page sends it)
    with httpx.Client(base_url=stack.url, headers=student.bearer, timeout=180) as client:
        status, event, payload = gradio_call(client, "chat", ["ich w1ll m1ch UMBRINGEN", [], "preset_assistant", None, None])
    assert status == 200 and event == "complete", payload
    assert _shown_answer(payload) == _words(BLOCKED["self_harm"]), payload[0]


def _stream(stack: Stack, user: User, text: str) -> tuple[list[str], str | None]:
    body = {"model": "schulki-chat", "max_tokens": 60, "temperature": 0, "seed": 1, "stream": True}
    body["messages"] = [{"role": "user", "content": text}]
    pieces, reason = [], None
    with httpx.stream("POST", stack.url + "/v1/chat/completions", headers=user.bearer, json=body, timeout=180) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                pieces.append(choice["delta"].get("content") or "")
                reason = choice.get("finish_reason") or reason
    return [p for p in pieces if p], reason


def test_a_blocked_answer_is_cut_in_the_stream_and_replaced(stack):
    student = make_user(stack, "student", ("7a",))
    pieces, reason = _stream(stack, student, "Erzähl mir eine Geschichte über einen Hund.")
    assert reason == "content_filter", pieces
    replacement = pieces[-1]
    assert replacement.strip() == BLOCKED["violence"], pieces
    model_text = "".join(pieces[:-1])
    assert model_text, "the model's first words went out before the cut"
    assert len(model_text) < 80, model_text  # cut before the rule's match was complete: the matching text never left
    # the Chat tab shows the fixed answer in place of the model's, not after it
    with httpx.Client(base_url=stack.url, headers=student.bearer, timeout=180) as client:
        status, event, payload = gradio_call(
            client, "chat", ["Erzähl mir eine Geschichte über einen Hund.", [], "preset_assistant", None, None]
        )
    assert status == 200 and event == "complete", payload
    assert _shown_answer(payload) == _words(BLOCKED["violence"]), payload[0]  # no word of the model's before it


def _flags_v1(stack: Stack, user: User) -> httpx.Response:
    return httpx.get(stack.url + "/v1/moderation/flags", headers=user.bearer, timeout=60)


def _flags_page(stack: Stack, user: User) -> tuple[str, object]:
    with httpx.Client(base_url=stack.url, headers=user.bearer, timeout=60) as client:
        status, event, payload = gradio_call(client, "moderation_flags", [])
    assert status == 200, payload
    return event, payload


def test_the_flag_reaches_the_teacher_of_the_class_only(stack):
    child = make_user(stack, "student", ("8c",))
    classmate = make_user(stack, "student", ("8c",))
    teacher = make_user(stack, "teacher", ("8c",))
    other_teacher = make_user(stack, "teacher", ("9d",))
    admin = make_user(stack, "admin")
    assert _chat(stack, child, "Ich habe Suizidgedanken.").json()["choices"][0]["finish_reason"] == "content_filter"

    flags = _flags_v1(stack, teacher)
    assert flags.status_code == 200, flags.text
    mine = [f for f in flags.json()["data"] if f["user"] == child.name]
    assert [(f["category"], f["outcome"], f["direction"], f["classes"]) for f in mine] == [("self_harm", "block", "input", ["8c"])]
    assert mine[0]["text"] is None  # the school keeps no text unless it turns that on
    event, payload = _flags_page(stack, teacher)
    assert event == "complete" and child.name in json.dumps(payload), payload
    assert any(child.name == f["user"] for f in _flags_v1(stack, admin).json()["data"])

    # a teacher of another class sees nothing of it, by either door
    assert all(f["user"] != child.name for f in _flags_v1(stack, other_teacher).json()["data"])
    event, payload = _flags_page(stack, other_teacher)
    assert event == "complete" and child.name not in json.dumps(payload), payload
    # a student (the classmate) is refused at both doors, and learns no name
    refused = _flags_v1(stack, classmate)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "teachers_only", refused.text
    assert child.name not in refused.text
    event, payload = _flags_page(stack, classmate)
    assert event == "error" and "Lehrkräfte" in str(payload) and child.name not in str(payload), payload
    with httpx.Client(base_url=stack.url, timeout=60) as stranger:  # and nobody without a session
        assert stranger.post("/gradio_api/call/moderation_flags", json={"data": []}).status_code == 401
        assert stranger.get("/v1/moderation/flags").status_code == 401


def test_blocked_questions_count_against_the_per_minute_limit(stack):
    """A loop of blocked questions meets the request limit like any other, and writes no flag past it."""
    student = make_user(stack, "student", ("8c",))
    teacher = make_user(stack, "teacher", ("8c",))
    limits = stack.config.gateway.requests_per_minute
    before = dict(limits)
    limits["student"] = 3
    try:
        answers = [_chat(stack, student, "Ich will mich umbringen.") for _ in range(4)]
    finally:
        limits.update(before)
    assert [a.status_code for a in answers] == [200, 200, 200, 429], [a.text for a in answers]
    assert sum(f["user"] == student.name for f in _flags_v1(stack, teacher).json()["data"]) == 3
