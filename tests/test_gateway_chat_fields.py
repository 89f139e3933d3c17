"""/v1/chat/completions takes every field of OpenAI's chat request or refuses it by name; JSON answers always validate.

Driven by the official openai client against the real gateway, inference service and default model.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import openai
import pytest
from openai.types.chat.completion_create_params import CompletionCreateParamsBase

from tests.gateway_stack import running_stack, stack_config
from tests.json_schemas import PUPIL, WEATHER

PUPIL_FORMAT = {"type": "json_schema", "json_schema": {"name": "pupil", "schema": PUPIL, "strict": True}}
QUESTION = [{"role": "user", "content": "Was ist die Hauptstadt von Frankreich?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chat-fields")
    config = stack_config(folder)
    config.inference.parallel_sequences = 4
    config.inference.max_running_per_user = 4
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("inference",), config=config) as running:
        yield running


@pytest.fixture(scope="module")
def client(stack):
    student = stack.add_user("fields-fritz", "student", ("7a",))
    return openai.OpenAI(base_url=stack.url + "/v1", api_key=student.api_key, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def engine(stack):
    return stack.servers["inference"].services[0].engine


def answer(client, **fields) -> str:
    fields = {"model": "schulki-chat", "messages": QUESTION, "max_tokens": 8, "temperature": 0, **fields}
    return client.chat.completions.create(**fields).choices[0].message.content


# -- JSON answers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.0, 1.0], ids=["greedy", "sampled"])
def test_a_json_schema_answer_validates_20_of_20_times(client, temperature):
    def ask(i: int) -> str:
        completion = client.chat.completions.create(
            model="schulki-chat",
            messages=[{"role": "user", "content": f"Beschreibe Schüler Nummer {i} als JSON."}],
            response_format=PUPIL_FORMAT,  # type: ignore[arg-type]
            max_tokens=48,
            temperature=temperature,
        )
        assert completion.choices[0].finish_reason == "stop", completion
        return completion.choices[0].message.content

    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(ask, range(20)))
    for text in texts:
        jsonschema.validate(json.loads(text), PUPIL)
    print(texts)


def test_a_streamed_json_object_reassembles_into_an_object(client):
    stream = client.chat.completions.create(
        model="schulki-chat",
        messages=[{"role": "user", "content": "Nenne drei Farben als JSON."}],
        response_format={"type": "json_object"},
        max_tokens=96,
        temperature=0,
        stream=True,
    )
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    text = "".join(choice.delta.content or "" for choice in chunks)
    # any object is allowed, so only an answer that the grammar ended (not max_tokens) is whole
    assert chunks[-1].finish_reason == "stop" and isinstance(json.loads(text), dict), text


@pytest.mark.parametrize(
    ("response_format", "param", "problem"),
    [
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, None, "JSON-Schema"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(("}}}, None, "Pattern"),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}, "response_format", "schema"),
        ({"type": "json_schema"}, "response_format", "json_schema"),
        ({"type": "yaml"}, "response_format", "type"),
    ],
)
def test_a_response_format_that_cannot_be_followed_is_a_400_naming_the_problem(client, response_format, param, problem):
    with pytest.raises(openai.BadRequestError) as caught:
        answer(client, response_format=response_format)
    assert caught.value.body["param"] == param and problem in caught.value.body["message"], caught.value.body


# -- every field of OpenAI's request -----------------------------------------------------------------------------------

REFUSED = {
    "audio": {"voice": "alloy", "format": "wav"},
    "function_call": "auto",
    "functions": [{"name": "f", "parameters": {"type": "object"}}],
    "metadata": {"klasse": "7a"},
    "modalities": ["text", "audio"],
    "moderation": {"type": "auto"},
    "n": 2,
    "prediction": {"type": "content", "content": "Paris"},
    "prompt_cache_options": {"mode": "explicit"},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "service_tier": "flex",
    "store": True,
    "verbosity": "low",
    "web_search_options": {},
}
"""A value of each field that asks for something schulki does not do: a 400 naming the field."""

HARMLESS = {"modalities": ["text"], "n": 1, "service_tier": "auto", "store": False}
"""The value of a refused field that asks for what schulki does anyway: taken."""

NOTHING_TO_DO = ("user", "safety_identifier", "prompt_cache_key")
"""Taken, and documented as having nothing to do (chat_options.py): schulki sends its own pseudonym of the account, and
its prefix cache needs no key."""


def _messages(client, engine) -> None:
    assert answer(client) != answer(client, messages=[{"role": "user", "content": "Nenne eine Farbe."}])


def _model(client, engine) -> None:
    with pytest.raises(openai.NotFoundError):
        answer(client, model="gpt-4o")


def _max_tokens(client, engine) -> None:
    for name in ("max_tokens", "max_completion_tokens"):
        completion = client.chat.completions.create(model="schulki-chat", messages=QUESTION, **{name: 2})
        assert completion.usage.completion_tokens <= 2 and completion.choices[0].finish_reason == "length"


def _temperature(client, engine) -> None:
    assert len({answer(client, temperature=2.0, seed=seed) for seed in range(4)}) > 1


def _seed(client, engine) -> None:
    assert answer(client, temperature=1.5, seed=7) == answer(client, temperature=1.5, seed=7)
    assert len({answer(client, temperature=1.5, seed=seed) for seed in range(4)}) > 1


def _top_p(client, engine) -> None:
    greedy = answer(client)
    assert {answer(client, temperature=2.0, seed=seed, top_p=1e-6) for seed in range(3)} == {greedy}


def _top_k(client, engine) -> None:  # llama.cpp's field, sent in the body beside OpenAI's
    greedy = answer(client)
    assert {answer(client, temperature=2.0, seed=seed, extra_body={"top_k": 1}) for seed in range(3)} == {greedy}


def _stop(client, engine) -> None:
    greedy = answer(client, max_tokens=16)
    stop = greedy[len(greedy) // 2 :][:3]
    assert answer(client, max_tokens=16, stop=[stop]) == greedy[: greedy.index(stop)]


def _logit_bias(client, engine) -> None:
    first = engine.tokens_of(answer(client))[0]
    assert engine.tokens_of(answer(client, logit_bias={str(first): -100}))[0] != first


def _penalty(name: str) -> Callable:
    def check(client, engine) -> None:
        repeat = [{"role": "user", "content": "Wiederhole zehnmal: Hallo Hallo Hallo"}]
        assert answer(client, messages=repeat, max_tokens=16) != answer(client, messages=repeat, max_tokens=16, **{name: 2.0})

    return check


def _response_format(client, engine) -> None:
    jsonschema.validate(json.loads(answer(client, response_format=PUPIL_FORMAT, max_tokens=48)), PUPIL)


def _stream_options(client, engine) -> None:
    def chunks(**fields):
        return list(client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=2, stream=True, **fields))

    assert chunks(stream_options={"include_usage": True})[-1].usage is not None
    assert all(chunk.usage is None for chunk in chunks())


def _logprobs(client, engine) -> None:
    completion = client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=3, logprobs=True)
    assert completion.choices[0].logprobs is not None and completion.choices[0].logprobs.content
    assert (
        answer(client) and client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=3).choices[0].logprobs is None
    )


def _top_logprobs(client, engine) -> None:
    completion = client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=3, logprobs=True, top_logprobs=3)
    assert all(len(token.top_logprobs) == 3 for token in completion.choices[0].logprobs.content)


TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "get_time"}},
]


def _calls(client, **fields) -> list:
    return (
        client.chat.completions.create(model="schulki-chat", messages=QUESTION, max_tokens=64, temperature=0, **fields)
        .choices[0]
        .message.tool_calls
        or []
    )


def _tools(client, engine) -> None:  # test_gateway_tools.py checks the calls' shape and validity
    assert _calls(client, tools=TOOLS, tool_choice="required") and not _calls(client)


def _tool_choice(client, engine) -> None:
    assert _calls(client, tools=TOOLS, tool_choice="required") and not _calls(client, tools=TOOLS, tool_choice="none")


def _parallel_tool_calls(client, engine) -> None:
    assert len(_calls(client, tools=TOOLS, tool_choice="required")) > 1
    assert len(_calls(client, tools=TOOLS, tool_choice="required", parallel_tool_calls=False)) == 1


EFFECTS: dict[str, Callable] = {
    "tools": _tools,
    "tool_choice": _tool_choice,
    "parallel_tool_calls": _parallel_tool_calls,
    "logprobs": _logprobs,
    "top_logprobs": _top_logprobs,
    "messages": _messages,
    "model": _model,
    "max_tokens": _max_tokens,
    "max_completion_tokens": _max_tokens,
    "temperature": _temperature,
    "seed": _seed,
    "top_p": _top_p,
    "stop": _stop,
    "logit_bias": _logit_bias,
    "presence_penalty": _penalty("presence_penalty"),
    "frequency_penalty": _penalty("frequency_penalty"),
    "response_format": _response_format,
    "stream_options": _stream_options,
}
"""How each field that works shows that it does."""


def test_every_field_of_openais_chat_request_is_handled():
    fields = set(CompletionCreateParamsBase.__annotations__)
    handled = set(EFFECTS) | set(REFUSED) | set(NOTHING_TO_DO)
    assert fields - handled == set(), "a field of OpenAI's chat request that schulki neither uses nor refuses"
    assert set(EFFECTS).isdisjoint(REFUSED)


@pytest.mark.parametrize("name", sorted(EFFECTS))
def test_a_field_that_works_changes_the_answer(client, engine, name):
    EFFECTS[name](client, engine)


def test_top_k_from_the_extra_body_works(client, engine):
    _top_k(client, engine)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_a_field_schulki_does_not_do_is_a_400_naming_it(client, name):
    with pytest.raises(openai.BadRequestError) as caught:
        answer(client, **{name: REFUSED[name]})
    assert caught.value.body["param"] == name and name in caught.value.body["message"], caught.value.body
    if name in HARMLESS:
        assert answer(client, **{name: HARMLESS[name]})


@pytest.mark.parametrize("name", NOTHING_TO_DO)
def test_a_field_with_nothing_to_do_is_taken_and_documented(client, name):
    from schulki.gateway.api import chat_options

    assert answer(client, **{name: "pseudonym-42"}) and name in (chat_options.__doc__ or "")


@pytest.mark.parametrize(
    ("name", "value"), [("top_p", 0.5), ("logit_bias", {"1": 5}), ("response_format", {"type": "json_object"}), ("tools", [])]
)
def test_a_document_question_refuses_the_fields_it_does_not_pass_on(stack, client, name, value):
    # a document question is written with the chat's own sampling: these fields would be dropped there
    documents = openai.OpenAI(base_url=f"{stack.url}/v1/vector_stores/vs_u-1", api_key=client.api_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        documents.chat.completions.create(model="schulki-chat", messages=QUESTION, **{name: value})
    assert caught.value.body["param"] == name and caught.value.body["code"] == "unsupported_parameter", caught.value.body
