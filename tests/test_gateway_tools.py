"""Tool calls on /v1/chat/completions in OpenAI's shape, driven by the official openai client against the real
gateway, inference service and default model (Gemma 3 270M, which gets the fallback format: it plans poorly, so the
tests check the shape and the validity of the calls, not the model's choices)."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from tests.gateway_stack import running_stack, stack_config
from tests.json_schemas import WEATHER

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Das Wetter in einer Stadt", "parameters": WEATHER},
}
CLOCK_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Die Uhrzeit"}}
QUESTION = [{"role": "user", "content": "Wie ist das Wetter in Berlin und wie spät ist es?"}]
NAMED = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tools")
    config = stack_config(folder)
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    student = stack.add_user("tools-tina", "student", ("7a",))
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=600)


def create(client, **fields):
    """A chat completion offering both tools; a field given as None is left out."""
    fields = {
        "model": "schulki-chat",
        "messages": QUESTION,
        "max_tokens": 96,
        "temperature": 0,
        "tools": [WEATHER_TOOL, CLOCK_TOOL],
        **fields,
    }
    return client.chat.completions.create(**{name: value for name, value in fields.items() if value is not None})


def streamed_calls(client, **fields) -> tuple[dict[int, dict], str | None, str]:
    """The calls a streamed answer's deltas add up to (index -> id, name, arguments), its finish reason and its text."""
    calls: dict[int, dict] = {}
    finish, text = None, ""
    for chunk in create(client, stream=True, **fields):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for delta in choice.delta.tool_calls or []:
                call = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                call["id"] = delta.id or call["id"]
                call["name"] += (delta.function and delta.function.name) or ""
                call["arguments"] += (delta.function and delta.function.arguments) or ""
            finish = choice.finish_reason or finish
    return calls, finish, text


def assert_valid(call) -> None:
    """A call of one of the offered tools with arguments that fit its parameters."""
    arguments = json.loads(call.function.arguments)
    assert call.type == "function" and call.id.startswith("call_")
    if call.function.name == "get_weather":
        jsonschema.validate(arguments, WEATHER)
    else:
        assert call.function.name == "get_time" and isinstance(arguments, dict)


def test_a_named_function_is_called_with_arguments_valid_for_its_schema(client):
    choice = create(client, tool_choice=NAMED).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [call.function.name for call in choice.message.tool_calls] == ["get_weather"]
    jsonschema.validate(json.loads(choice.message.tool_calls[0].function.arguments), WEATHER)


def test_required_calls_offered_tools_with_valid_arguments(client):
    choice = create(client, tool_choice="required").choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert_valid(call)
    assert len({call.id for call in choice.message.tool_calls}) == len(choice.message.tool_calls)


@pytest.mark.parametrize("tool_choice", ["required", NAMED], ids=["required", "named"])
def test_a_streamed_call_reassembles_into_the_same_call(client, tool_choice):
    whole = create(client, tool_choice=tool_choice).choices[0].message.tool_calls
    calls, finish, text = streamed_calls(client, tool_choice=tool_choice)
    assert finish == "tool_calls" and text == ""
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        (call.function.name, json.loads(call.function.arguments)) for call in whole
    ]
    assert all(c["id"].startswith("call_") for c in calls.values())


def test_parallel_tool_calls_false_gives_at_most_one_call(client):
    for stream in (False, True):
        if stream:
            calls, finish, _ = streamed_calls(client, tool_choice="required", parallel_tool_calls=False)
            assert finish == "tool_calls" and len(calls) == 1
        else:
            choice = create(client, tool_choice="required", parallel_tool_calls=False).choices[0]
            assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
            assert_valid(choice.message.tool_calls[0])


def test_tool_choice_none_gives_text(client):
    choice = create(client, tool_choice="none", max_tokens=16).choices[0]
    assert choice.message.content and not choice.message.tool_calls and choice.finish_reason in ("stop", "length")
    assert not choice.message.content.startswith("{")  # not a call cut off by max_tokens either
    calls, finish, text = streamed_calls(client, tool_choice="none", max_tokens=16)
    assert text and not calls and finish in ("stop", "length") and not text.startswith("{")


def test_auto_gives_text_or_a_valid_call(client):
    choice = create(client, tool_choice="auto", max_tokens=24).choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert_valid(call)
    else:
        assert choice.message.content and choice.finish_reason in ("stop", "length")


def test_a_conversation_with_a_call_and_its_result_is_answered(client):
    call = create(client, tool_choice=NAMED).choices[0].message.tool_calls[0]
    messages = [
        *QUESTION,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "sonnig"})},
    ]
    answer = create(client, messages=messages, tool_choice="none", max_tokens=24)
    assert answer.choices[0].message.content and not answer.choices[0].message.tool_calls
    # the call and its result were read: each adds to the prompt
    called = create(client, messages=messages[:-1], tool_choice="none", max_tokens=1)
    plain = create(client, tool_choice="none", max_tokens=1)
    assert answer.usage.prompt_tokens > called.usage.prompt_tokens > plain.usage.prompt_tokens
    # The streamed answer reassembles into the same text as the whole one, compared from the same cached cells:
    # a prompt read partly in one batch and a prompt read from the cache give logits that differ in the last bits
    # (llama.cpp sums in another order), enough to turn a near tie when the model copies the call's random id.
    # The first repeat leaves the whole prompt in the cache; the stream and the last repeat both start from it.
    create(client, messages=messages, tool_choice="none", max_tokens=24)
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in create(client, messages=messages, tool_choice="none", max_tokens=24, stream=True)
        if chunk.choices
    )
    assert streamed == create(client, messages=messages, tool_choice="none", max_tokens=24).choices[0].message.content


@pytest.mark.parametrize(
    ("fields", "param", "problem"),
    [
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": "f", "parameters": {"type": "object", "properties": {"x": {"type": "nonsense"}}}},
                    }
                ]
            },
            None,
            "Werkzeug f",
        ),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]}, "tools", "object"),
        ({"tools": [{"type": "code_interpreter"}]}, "tools", "function tools only"),
        ({"tools": [{"type": "function", "function": {"name": "kein name"}}]}, "tools", "letters, digits"),
        ({"tool_choice": {"type": "function", "function": {"name": "fly"}}}, "tool_choice", "'fly'"),
        ({"tool_choice": "required", "tools": None}, "tool_choice", "no tools"),
        ({"tool_choice": "always"}, "tool_choice", "auto, none, required"),
        (
            {"messages": [*QUESTION, {"role": "tool", "tool_call_id": "call_nirgends", "content": "21"}]},
            "messages",
            "call_nirgends",
        ),
        (
            {"tool_choice": "required", "response_format": {"type": "json_object"}},
            None,
            "response_format",
        ),
    ],
)
def test_tools_that_cannot_be_followed_are_a_400_naming_the_problem(client, fields, param, problem):
    with pytest.raises(openai.BadRequestError) as caught:
        create(client, **fields)
    assert caught.value.body["param"] == param and problem in caught.value.body["message"], caught.value.body
