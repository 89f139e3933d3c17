"""The guard around one answer, without a model: what passes through it untouched and where its notes go."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest
from schulki.config import ModerationConfig
from schulki.gateway.accounts.database import Account
from schulki.gateway.moderation.guard import Moderation
from schulki.inference.v1 import inference_service_pb2 as inference_pb

STUDENT = Account(1, "mia", "student", ("7a",))
JSON_WITH_A_PHONE = '{"name": "Praxis", "telefon": "0171 2345678"}'


async def _answer(*events: inference_pb.ChatResponse) -> AsyncGenerator[inference_pb.ChatResponse, None]:
    for event in events:
        yield event


def _finish(reason: int = inference_pb.FINISH_REASON_STOP) -> inference_pb.ChatResponse:
    return inference_pb.ChatResponse(finish=inference_pb.ChatFinish(reason=reason))


def _through(events: list[inference_pb.ChatResponse], notes: bool) -> list[inference_pb.ChatResponse]:
    moderation = Moderation(ModerationConfig(), flags=None)  # type: ignore[arg-type]  # personal data warns and flags nothing
    guarded = moderation.guard(STUDENT, [{"role": "user", "content": "Gib mir JSON."}], _answer(*events), True, lambda: None, notes)

    async def collect() -> list[inference_pb.ChatResponse]:
        return [event async for event in guarded.events()]

    return asyncio.run(collect())


def test_a_warned_answer_gets_its_note_but_a_parsed_one_stays_as_the_model_wrote_it():
    events = [inference_pb.ChatResponse(text=JSON_WITH_A_PHONE), _finish()]
    noted = "".join(event.text for event in _through(events, notes=True))
    assert noted.startswith(JSON_WITH_A_PHONE) and len(noted) > len(JSON_WITH_A_PHONE)  # the German note after it
    assert "".join(event.text for event in _through(events, notes=False)) == JSON_WITH_A_PHONE


def test_a_tool_call_passes_the_guard_whole():
    call = inference_pb.ChatResponse(tool_call=inference_pb.ToolCall(id="call_1", name="wetter", arguments='{"ort": "Ulm"}'))
    passed = _through([call, _finish(inference_pb.FINISH_REASON_TOOL_CALLS)], notes=False)
    assert [event.WhichOneof("event") for event in passed] == ["tool_call", "finish"]
    assert passed[0].tool_call.arguments == '{"ort": "Ulm"}'


class NodeLost(Exception):
    """The node writing the answer went away."""


def test_an_answer_that_breaks_off_still_passes_on_the_word_it_held_back():
    async def broken() -> AsyncGenerator[inference_pb.ChatResponse, None]:
        yield inference_pb.ChatResponse(text="Der Vul")
        raise NodeLost

    moderation = Moderation(ModerationConfig(), flags=None)  # type: ignore[arg-type]
    guarded = moderation.guard(STUDENT, [{"role": "user", "content": "Erzähl vom Vulkan."}], broken(), True, lambda: None)
    received: list[str] = []

    async def collect() -> None:
        async for event in guarded.events():
            received.append(event.text)

    with pytest.raises(NodeLost):  # the break reaches the caller
        asyncio.run(collect())
    assert "".join(received) == "Der Vul"  # "Vul" was held back as an unfinished word, and is not lost
